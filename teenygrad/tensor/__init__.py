from teenygrad.tensor.tensor import Tensor, enable_grad, is_grad_enabled, no_grad

__all__ = ["Tensor", "no_grad", "enable_grad", "is_grad_enabled"]
