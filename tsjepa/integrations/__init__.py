"""tsjepa encoders inside other libraries' pipelines: `tsjepa.integrations.gluonts` (an estimator and its
``PyTorchPredictor``) and `tsjepa.integrations.sktime` (a forecaster and an embedding transformer). The xarray
interface is `tsjepa.embed`. Each module imports its library only when it is itself imported."""
