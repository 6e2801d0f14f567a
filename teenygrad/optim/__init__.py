"""Optimizers and learning-rate schedulers with torch.optim's names, update rules and state_dict layout."""
from teenygrad.optim import lr_scheduler
from teenygrad.optim.adagrad import Adagrad
from teenygrad.optim.adam import Adam, AdamW
from teenygrad.optim.optimizer import Optimizer
from teenygrad.optim.rmsprop import RMSprop
from teenygrad.optim.sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "lr_scheduler"]
