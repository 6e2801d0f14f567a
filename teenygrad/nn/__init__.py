"""Neural-network modules (torch.nn names); `teenygrad.nn.functional` holds the functional forms."""
from teenygrad.nn import functional
