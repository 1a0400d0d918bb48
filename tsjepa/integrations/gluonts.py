"""A pretrained tsjepa encoder as a GluonTS estimator: ``TSJEPAEstimator(checkpoint, prediction_length)``.

The split follows GluonTS: a transformation (observed-value mask, channel ids, instance splitting), a network
(`TSJEPAForecastModel`: encoder + a linear head to the parameters of a distribution per future step and
channel, in the window's instance-normalised units), a Lightning module that trains it by negative
log-likelihood, and a `PyTorchPredictor` drawing sample paths. The predictor is a plain GluonTS predictor:
``make_evaluation_predictions``, ``Evaluator``, ``evaluate_model`` and ``Predictor.serialize/deserialize``
work on it unchanged.

Time: one step of the dataset's ``freq`` is one time unit of the encoder, so ``context_length`` may be at
most the checkpoint's span (e.g. 336 for an ETTh1 checkpoint). Channels: each target dimension is a channel
of the checkpoint's vocabulary, named by ``channels`` (multivariate targets), by a field of each entry such
as ``item_id`` (``channel_field``; univariate series that are channels of one system), or, when neither is
given, new channels whose identity embeddings are learned only if the encoder is fine-tuned.
"""

# No `from __future__ import annotations` here: GluonTS's @validated reads the annotations at runtime.
import tempfile
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from einops import rearrange
from gluonts.core.component import validated
from gluonts.dataset.common import DataEntry, Dataset
from gluonts.dataset.field_names import FieldName
from gluonts.dataset.loader import as_stacked_batches
from gluonts.itertools import Cyclic, select
from gluonts.model.forecast_generator import SampleForecastGenerator
from gluonts.torch.distributions import DistributionOutput, StudentTOutput
from gluonts.torch.model.estimator import PyTorchLightningEstimator, TrainOutput
from gluonts.torch.model.predictor import PyTorchPredictor
from gluonts.torch.util import weighted_average
from gluonts.transform import (
    AddObservedValuesIndicator,
    ExpectedNumInstanceSampler,
    InstanceSampler,
    InstanceSplitter,
    MapTransformation,
    SelectFields,
    TestSplitSampler,
    Transformation,
    ValidationSplitSampler,
)
from torch import Tensor, nn

from tsjepa.checkpoint import from_pretrained
from tsjepa.data.batch import Batch
from tsjepa.data.vocab import UNKNOWN, UnknownChannelError
from tsjepa.models import Encoder, EncoderConfig

CHANNEL_IDS = "channel_ids"
PREDICTION_INPUT_NAMES = ["past_target", "past_observed_values", CHANNEL_IDS]
TRAINING_INPUT_NAMES = [*PREDICTION_INPUT_NAMES, "future_target", "future_observed_values"]
STUDENT_T = StudentTOutput()  # the default output distribution, as in GluonTS's own estimators


def check_context_length(context_length: int, span: float) -> None:
    """One step of the dataset's freq is one time unit: more context than the encoder's span cannot be read
    (earlier observations would fall outside the window); less than one step is nothing to read."""
    if context_length < 1:
        raise ValueError(f"context_length must be >= 1, got {context_length}")
    if context_length > span:
        raise ValueError(f"context_length {context_length} exceeds the checkpoint's span {span} "
                         "(one step of the dataset's freq is one time unit)")


class SetChannelIds(MapTransformation):
    """Adds ``channel_ids`` ``[C]`` (int64) to each entry: the fixed ``ids`` of the target dimensions, or
    the id ``lookup[entry[field]]`` of a univariate entry's channel (e.g. ``field="item_id"``)."""

    @validated()
    def __init__(self, ids: list[int] | None = None, lookup: dict[str, int] | None = None,
                 field: str = FieldName.ITEM_ID) -> None:
        if (ids is None) == (lookup is None):
            raise ValueError("give exactly one of ids (fixed channels) or lookup (channel named by a field)")
        self.ids, self.lookup, self.field = ids, lookup, field

    def map_transform(self, data: DataEntry, is_train: bool) -> DataEntry:
        target_dim = 1 if np.ndim(data[FieldName.TARGET]) == 1 else len(data[FieldName.TARGET])
        if self.ids is not None:
            if target_dim != len(self.ids):
                raise ValueError(f"entry {data.get(FieldName.ITEM_ID)!r} has {target_dim} target dimension(s), "
                                 f"the estimator was built for {len(self.ids)}")
            data[CHANNEL_IDS] = np.asarray(self.ids, dtype=np.int64)
            return data
        if target_dim != 1:
            raise ValueError(f"channel_field={self.field!r} names the channel of univariate entries; entry "
                             f"{data.get(FieldName.ITEM_ID)!r} has {target_dim} target dimensions")
        if self.field not in data:
            raise ValueError(f"entry has no field {self.field!r} to name its channel (channel_field)")
        name = str(data[self.field])
        if name not in self.lookup and UNKNOWN in self.lookup:  # a vocabulary with a shared unknown identity
            name = UNKNOWN
        if name not in self.lookup:
            raise UnknownChannelError(f"unknown channel {name!r} (field {self.field!r}); the checkpoint knows "
                                      f"{sorted(self.lookup)}")
        data[CHANNEL_IDS] = np.asarray([self.lookup[name]], dtype=np.int64)
        return data


class TSJEPAForecastModel(nn.Module):
    """Encoder + head: a context window -> distribution parameters per (channel, future step).

    Inputs ``past_target`` / ``past_observed_values`` are ``[B, T]`` (``target_dim`` 1) or ``[B, T, C]``,
    ``channel_ids`` ``[B, C]``. `forward` returns ``num_parallel_samples`` sample paths, ``[B, S, H]`` or
    ``[B, S, H, C]``, as GluonTS's `SampleForecastGenerator` expects.
    """

    @validated()
    def __init__(self, encoder_config: dict, prediction_length: int, context_length: int, target_dim: int = 1,
                 distr_output: DistributionOutput = STUDENT_T, head_dim: int = 8,
                 finetune_encoder: bool = False, num_parallel_samples: int = 100) -> None:
        super().__init__()
        self.encoder = Encoder(EncoderConfig(**encoder_config))
        check_context_length(context_length, self.encoder.config.span)
        self.prediction_length, self.context_length, self.target_dim = prediction_length, context_length, target_dim
        self.distr_output, self.head_dim = distr_output, head_dim
        self.finetune_encoder, self.num_parallel_samples = finetune_encoder, num_parallel_samples
        self.encoder.requires_grad_(finetune_encoder)
        d_model, num_patches = self.encoder.config.d_model, self.encoder.num_patches
        self.head = nn.Linear(num_patches * d_model, prediction_length * head_dim)
        self.args_proj = distr_output.get_args_proj(head_dim)

    def channels_first(self, x: Tensor) -> Tensor:
        """``[B, T]`` or ``[B, T, C]`` -> ``[B, C, T]``."""
        return x[:, None, :] if self.target_dim == 1 else rearrange(x, "b t c -> b c t")

    def distribution_args(self, past_target: Tensor, past_observed_values: Tensor,
                          channel_ids: Tensor) -> tuple[tuple[Tensor, ...], Tensor, Tensor]:
        """Distribution arguments (each ``[B, C, H]``) in instance-normalised units, and loc/scale
        ``[B, C, 1]`` mapping them back to data units."""
        values = self.channels_first(past_target[:, -self.context_length:])
        observed = self.channels_first(past_observed_values[:, -self.context_length:]) > 0
        b, c, t = values.shape
        times = torch.arange(-t, 0, device=values.device, dtype=torch.float32).expand(b, c, t)
        batch = Batch(values=values.float(), times=times.contiguous(), observed=observed,
                      channel_ids=channel_ids.long())
        with torch.set_grad_enabled(self.finetune_encoder and torch.is_grad_enabled()):
            out = self.encoder(batch)
        hidden = self.head(rearrange(out.embeddings, "b c p d -> b c (p d)"))
        args = self.args_proj(rearrange(hidden, "b c (h k) -> b c h k", k=self.head_dim))
        return args, out.loc[..., None], out.scale[..., None]

    def forward(self, past_target: Tensor, past_observed_values: Tensor, channel_ids: Tensor) -> Tensor:
        """Sample paths; a series (or channel) with no observed value in its context cannot be forecast and is an
        error rather than a forecast made of nothing."""
        seen = self.channels_first(past_observed_values[:, -self.context_length:]).flatten(2).any(-1)  # [B, C]
        if not seen.all():
            b, c = (int(i) for i in (~seen).nonzero()[0])
            raise ValueError(f"series {b} of the batch (channel {c}) has no observed value in its last "
                             f"{self.context_length} steps: there is nothing to forecast it from")
        args, loc, scale = self.distribution_args(past_target, past_observed_values, channel_ids)
        samples = self.distr_output.distribution(args, loc, scale).sample((self.num_parallel_samples,))
        pattern = "s b 1 h -> b s h" if self.target_dim == 1 else "s b c h -> b s h c"
        return rearrange(samples, pattern)

    def loss(self, past_target: Tensor, past_observed_values: Tensor, channel_ids: Tensor, future_target: Tensor,
             future_observed_values: Tensor) -> Tensor:
        """Negative log-likelihood of the observed future values, averaged per window ``[B]``."""
        args, loc, scale = self.distribution_args(past_target, past_observed_values, channel_ids)
        nll = self.distr_output.loss(self.channels_first(future_target), args, loc, scale)
        weights = self.channels_first(future_observed_values)
        return weighted_average(rearrange(nll, "b c h -> b (c h)"), rearrange(weights, "b c h -> b (c h)"), dim=-1)


class TSJEPALightningModule(pl.LightningModule):
    """Trains a `TSJEPAForecastModel` (the head, and the encoder when it is fine-tuned) with Adam."""

    @validated()
    def __init__(self, model_kwargs: dict, lr: float = 1e-3, weight_decay: float = 1e-8) -> None:
        super().__init__()
        self.model = TSJEPAForecastModel(**model_kwargs)
        self.lr, self.weight_decay = lr, weight_decay

    def forward(self, *args, **kwargs) -> Tensor:
        return self.model(*args, **kwargs)

    def step_loss(self, batch: dict) -> Tensor:
        return self.model.loss(**select(TRAINING_INPUT_NAMES, batch)).mean()

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss = self.step_loss(batch)
        self.log("train_loss", loss, on_epoch=True, on_step=False, prog_bar=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss = self.step_loss(batch)
        self.log("val_loss", loss, on_epoch=True, on_step=False, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)


class TSJEPAEstimator(PyTorchLightningEstimator):
    """Fine-tunes a forecasting head (and optionally the encoder) on top of a pretrained tsjepa checkpoint.

    Args:
        checkpoint: a tsjepa checkpoint directory or a shipped encoder's name (`tsjepa.from_pretrained`, e.g.
            ``"tsjepa-base-corpus"``).
        prediction_length: forecast horizon in steps.
        context_length: steps of history fed to the encoder (default and maximum: the checkpoint's span).
        target_dim: target dimensions per entry (1: univariate ``target [T]``; else ``target [C, T]``).
        channels: checkpoint channel names of the ``target_dim`` target dimensions.
        channel_field: entry field naming each univariate series' channel (e.g. ``"item_id"``).
        add_unknown_channels: with ``channels``, append names the checkpoint does not know to its vocabulary
            (new identity embeddings) instead of raising `UnknownChannelError`, or, for a checkpoint with a
            shared ``<unknown>`` identity (e.g. ``"tsjepa-base-corpus"``), instead of giving them that one.
        finetune_encoder: train the encoder too (default: only the head).
        init: ``"pretrained"`` encoder weights, or ``"random"`` (the same architecture trained from scratch:
            the no-pretraining baseline).
        distr_output: the output distribution (default Student's t).
        head_dim: hidden size per future step before the distribution projection.
        lr, weight_decay, batch_size, num_batches_per_epoch, trainer_kwargs: training, as in GluonTS's own
            estimators (default ``max_epochs=10``; a temporary ``default_root_dir`` holds Lightning's
            checkpoints and logs unless one is given).
        num_parallel_samples: sample paths per forecast.
        train_sampler, validation_sampler: where training / validation windows are cut.
    """

    @validated()
    def __init__(self, checkpoint: str, prediction_length: int, context_length: int | None = None,
                 target_dim: int = 1, channels: list[str] | None = None, channel_field: str | None = None,
                 add_unknown_channels: bool = False, finetune_encoder: bool = False, init: str = "pretrained",
                 distr_output: DistributionOutput = STUDENT_T, head_dim: int = 8, lr: float = 1e-3,
                 weight_decay: float = 1e-8, batch_size: int = 32, num_batches_per_epoch: int = 50,
                 num_parallel_samples: int = 100, trainer_kwargs: dict[str, Any] | None = None,
                 train_sampler: InstanceSampler | None = None,
                 validation_sampler: InstanceSampler | None = None) -> None:
        super().__init__(trainer_kwargs={"max_epochs": 10, "gradient_clip_val": 1.0, **(trainer_kwargs or {})})
        if init not in ("pretrained", "random"):
            raise ValueError(f"init must be 'pretrained' or 'random', got {init!r}")
        if channels is not None and channel_field is not None:
            raise ValueError("give channels (names of the target dimensions) or channel_field, not both")
        if channels is not None and len(channels) != target_dim:
            raise ValueError(f"{len(channels)} channel names for target_dim {target_dim}")
        self.pretrained = from_pretrained(checkpoint)
        span = self.pretrained.encoder.config.span
        if prediction_length < 1:
            raise ValueError(f"prediction_length must be >= 1, got {prediction_length}")
        self.context_length = int(span if context_length is None else context_length)
        check_context_length(self.context_length, span)
        vocab = self.pretrained.vocab
        if channel_field is not None:
            self.channel_ids = SetChannelIds(lookup={n: i for i, n in enumerate(vocab.names)}, field=channel_field)
        else:
            names = channels if channels is not None else [f"target/{i}" for i in range(target_dim)]
            # unnamed dimensions: the shared <unknown> identity when the checkpoint has one, else new rows
            ids = vocab.ids(names, add_unknown=add_unknown_channels or (channels is None and UNKNOWN not in vocab.names))
            self.channel_ids = SetChannelIds(ids=[int(i) for i in ids])
        self.prediction_length, self.target_dim = prediction_length, target_dim
        self.finetune_encoder, self.init = finetune_encoder, init
        self.distr_output, self.head_dim = distr_output, head_dim
        self.lr, self.weight_decay = lr, weight_decay
        self.batch_size, self.num_batches_per_epoch = batch_size, num_batches_per_epoch
        self.num_parallel_samples = num_parallel_samples
        self.train_sampler = train_sampler or ExpectedNumInstanceSampler(num_instances=1.0,
                                                                         min_future=prediction_length)
        self.validation_sampler = validation_sampler or ValidationSplitSampler(min_future=prediction_length)

    def create_transformation(self) -> Transformation:
        keep = [FieldName.ITEM_ID, FieldName.INFO, FieldName.START, FieldName.TARGET]
        if self.channel_ids.lookup is not None:
            keep.append(self.channel_ids.field)
        return (SelectFields(list(dict.fromkeys(keep)), allow_missing=True)
                + AddObservedValuesIndicator(target_field=FieldName.TARGET, output_field=FieldName.OBSERVED_VALUES)
                + self.channel_ids)

    def create_lightning_module(self) -> TSJEPALightningModule:
        module = TSJEPALightningModule(
            model_kwargs={"encoder_config": self.pretrained.encoder.config.to_dict(),
                          "prediction_length": self.prediction_length, "context_length": self.context_length,
                          "target_dim": self.target_dim, "distr_output": self.distr_output,
                          "head_dim": self.head_dim, "finetune_encoder": self.finetune_encoder,
                          "num_parallel_samples": self.num_parallel_samples},
            lr=self.lr, weight_decay=self.weight_decay)
        if self.init == "pretrained":
            module.model.encoder.load_state_dict(self.pretrained.encoder.state_dict())
        return module

    def instance_splitter(self, mode: str) -> InstanceSplitter:
        sampler = {"training": self.train_sampler, "validation": self.validation_sampler,
                   "test": TestSplitSampler()}[mode]
        return InstanceSplitter(target_field=FieldName.TARGET, is_pad_field=FieldName.IS_PAD,
                                start_field=FieldName.START, forecast_start_field=FieldName.FORECAST_START,
                                instance_sampler=sampler, past_length=self.context_length,
                                future_length=self.prediction_length,
                                time_series_fields=[FieldName.OBSERVED_VALUES],
                                dummy_value=self.distr_output.value_in_support)

    def create_training_data_loader(self, data: Dataset, module: TSJEPALightningModule,
                                    shuffle_buffer_length: int | None = None, **kwargs):
        lengths = [np.shape(entry[FieldName.TARGET])[-1] for entry in data]
        if not any(n > self.prediction_length for n in lengths):  # else the sampler never yields a window
            raise ValueError(f"no training series is longer than prediction_length={self.prediction_length} (the "
                             f"longest of {len(lengths)} has {max(lengths, default=0)} rows), so no training window "
                             "can be cut: give longer series, or a shorter prediction_length")
        instances = self.instance_splitter("training").apply(Cyclic(data).stream(), is_train=True)
        return as_stacked_batches(instances, batch_size=self.batch_size, shuffle_buffer_length=shuffle_buffer_length,
                                  field_names=TRAINING_INPUT_NAMES, output_type=torch.tensor,
                                  num_batches_per_epoch=self.num_batches_per_epoch)

    def create_validation_data_loader(self, data: Dataset, module: TSJEPALightningModule, **kwargs):
        instances = self.instance_splitter("validation").apply(data, is_train=True)
        return as_stacked_batches(instances, batch_size=self.batch_size, field_names=TRAINING_INPUT_NAMES,
                                  output_type=torch.tensor)

    def create_predictor(self, transformation: Transformation, module: TSJEPALightningModule) -> PyTorchPredictor:
        return PyTorchPredictor(input_transform=transformation + self.instance_splitter("test"),
                                input_names=PREDICTION_INPUT_NAMES, prediction_net=module,
                                forecast_generator=SampleForecastGenerator(), batch_size=self.batch_size,
                                prediction_length=self.prediction_length, device="auto")

    def train_model(self, *args, **kwargs) -> TrainOutput:
        """GluonTS's training, with Lightning's checkpoints and logs in a temporary directory unless
        ``trainer_kwargs`` names a ``default_root_dir``."""
        if "default_root_dir" in self.trainer_kwargs:
            return super().train_model(*args, **kwargs)
        with tempfile.TemporaryDirectory(prefix="tsjepa-gluonts-") as root:
            self.trainer_kwargs["default_root_dir"] = root
            try:
                return super().train_model(*args, **kwargs)
            finally:
                del self.trainer_kwargs["default_root_dir"]
