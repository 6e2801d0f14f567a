"""Neural-network modules with torch.nn's names, parameter names and initialization; `teenygrad.nn.functional` holds
the functional forms, `teenygrad.nn.init` the initializers and `teenygrad.nn.utils` gradient clipping."""
from teenygrad.nn import functional, init, utils
from teenygrad.nn.activation import (CELU, ELU, GELU, SELU, Hardsigmoid, Hardswish, Hardtanh, LeakyReLU, LogSigmoid, LogSoftmax, Mish,
                                     ReLU, ReLU6, Sigmoid, SiLU, Softmax, Softplus, Softsign, Tanh)
from teenygrad.nn.attention import MultiheadAttention, TransformerEncoderLayer
from teenygrad.nn.container import ModuleDict, ModuleList, Sequential
from teenygrad.nn.conv import Conv1d, Conv2d, ConvTranspose2d
from teenygrad.nn.linear import Dropout, Embedding, Flatten, Identity, Linear, Unflatten
from teenygrad.nn.loss import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, KLDivLoss, L1Loss, MSELoss, NLLLoss,
                               SmoothL1Loss)
from teenygrad.nn.module import Module, Parameter
from teenygrad.nn.norm import BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm, RMSNorm
from teenygrad.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d

__all__ = ["functional", "init", "utils", "Module", "Parameter", "Sequential", "ModuleList", "ModuleDict", "Identity", "Linear",
           "Embedding", "Dropout", "Flatten", "Unflatten", "Conv1d", "Conv2d", "ConvTranspose2d", "BatchNorm1d", "BatchNorm2d",
           "LayerNorm", "RMSNorm", "GroupNorm", "MultiheadAttention", "TransformerEncoderLayer", "MaxPool2d", "AvgPool2d",
           "AdaptiveAvgPool2d", "ReLU", "ReLU6", "LeakyReLU", "ELU", "CELU", "SELU", "GELU", "SiLU", "Mish", "Sigmoid", "Tanh",
           "Softplus", "Softsign", "Hardswish", "Hardsigmoid", "Hardtanh", "LogSigmoid", "Softmax", "LogSoftmax", "MSELoss", "L1Loss",
           "SmoothL1Loss", "HuberLoss", "CrossEntropyLoss", "NLLLoss", "BCELoss", "BCEWithLogitsLoss", "KLDivLoss"]
