"""Diffusion back-end: a latent diffusion model (VAE + denoiser + noise schedule) sampled with CLIP guidance."""
