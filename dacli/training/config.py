"""The training configurations, as data: the model's constructor arguments, the discriminators'
widths, and the recipe (batch, excerpt length, learning rates, loss weights, weight average).
Why each value is what it is, and when it changed: docs/TRAINING.md."""

CONFIGS = {
    # The bundled default model: 44.1 kHz, hop 512, 9 codebooks x 10 bits (7.75 kbps), narrow channels.
    "bundled": dict(
        model=dict(encoder_dim=16, encoder_rates=[2, 4, 8, 8], latent_dim=256, decoder_dim=384,
                   decoder_rates=[8, 8, 4, 2], n_codebooks=9, codebook_size=1024, codebook_dim=8,
                   quantizer_dropout=0.5, sample_rate=44100),
        disc=dict(periods=[2, 3, 5, 7, 11], mpd_channels=[16, 32, 64, 128], fft_sizes=[2048, 1024, 512],
                  mrd_channels=16),
        batch=8, excerpt=0.38, lr=1e-4, betas=(0.8, 0.99), gamma=0.999996, disc_start=0,
        lambdas={"mel": 15.0, "feat": 2.0, "gen": 1.0, "codebook": 1.0, "commitment": 0.25},
        codebook_lr_scale=10.0,  # the codebooks' learning rate, relative to the rest's
        quiet_share=0.1,         # excerpts taken at their file's own level, pauses included (TrainingAudio)
        ema=0.999,               # decay per step of the exported moving average of the weights
    ),
    # A tiny configuration for the tests.
    "tiny": dict(
        model=dict(encoder_dim=4, encoder_rates=[2, 4, 8, 8], latent_dim=16, decoder_dim=16,
                   decoder_rates=[8, 8, 4, 2], n_codebooks=3, codebook_size=64, codebook_dim=4,
                   quantizer_dropout=0.5, sample_rate=44100),
        disc=dict(periods=[2, 3], mpd_channels=[4, 8, 8, 8], fft_sizes=[512], mrd_channels=4),
        batch=2, excerpt=0.1, lr=1e-4, betas=(0.8, 0.99), gamma=0.999996, disc_start=0,
        lambdas={"mel": 15.0, "feat": 2.0, "gen": 1.0, "codebook": 1.0, "commitment": 0.25},
        codebook_lr_scale=10.0, ema=0.9,
    ),
}

# Gradient-norm clips, as the official training recipe sets them: the discriminators' gradients are
# clipped at 10; the generator's at 1,000, which only catches blow-ups (its norm runs 150-750 here).
CLIP_DISC = 10.0
CLIP_GEN = 1e3
