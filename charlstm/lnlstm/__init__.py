"""``--cell ln-lstm``: the layer-normalised LSTM (``layer``) and its recurrence in C++ (``kernel``)."""

from charlstm.lnlstm.kernel import KernelStatus, status
from charlstm.lnlstm.layer import EPS, LNLSTM, PARAMETERS, input_side, parameter_shapes, reference_step

__all__ = ["EPS", "LNLSTM", "PARAMETERS", "KernelStatus", "input_side", "parameter_shapes", "reference_step", "status"]
