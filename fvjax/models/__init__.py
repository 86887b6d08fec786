"""Building blocks shared by the model families: layers, attention, the CPU-laid-out matmuls, remat
policies, the parameter-tree helpers (`params`) and the Diffusers key-map vocabulary (`keymap`).

The rule for model code: what one family uses lives in its folder (`fvjax/families/<name>/`, its text
encoder and VAE included); what several families can use lives here."""
