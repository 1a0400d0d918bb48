"""Model components: tokenizer, axial transformer blocks, encoder, predictor, heads."""

from tsjepa.models.encoder import Encoder, EncoderConfig, EncoderOutput
from tsjepa.models.predictor import Predictor, PredictorConfig

__all__ = ["Encoder", "EncoderConfig", "EncoderOutput", "Predictor", "PredictorConfig"]
