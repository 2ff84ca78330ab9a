"""Backlit enhancement: the CLIP-LIT / RAVE illumination network, its published weights, and CLIP-guided training.

Modules: ``network`` (the net), ``checkpoints`` (published names, loading, safetensors), ``fast`` (its inference
plan) and ``tiling``, ``enhance`` (the method), ``clip_lit`` and ``rave`` (the guidance of training), ``content``,
``data``, ``synthetic``, ``train``, ``metrics``; ``entries`` declares the method.
"""
