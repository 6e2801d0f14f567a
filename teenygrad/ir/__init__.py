"""The IR: primitive ops, the lazy graph node, views and symbolic integers."""
