"""Saving and loading: safetensors files (memory-mapped, lazy, torch-compatible) and atomic training checkpoints."""
from teenygrad.state.atomic import atomic_write
from teenygrad.state.checkpoint import get_state_dict, load_checkpoint, load_state_dict, save_checkpoint
from teenygrad.state.safetensors import load_file, load_metadata, read_header, save_file

safe_load, safe_save = load_file, save_file

__all__ = ["atomic_write", "get_state_dict", "load_checkpoint", "load_file", "load_metadata", "load_state_dict", "read_header",
           "safe_load", "safe_save", "save_checkpoint", "save_file"]
