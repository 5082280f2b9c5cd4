"""Training a DAC model with the paper's recipe, scaled to what a small CPU can train (the bundled
model's run: ``make train``; its history: docs/TRAINING.md).

- :mod:`.config`: the configurations, as data;
- :mod:`.corpus`: the training and held-out sets, built from Debian packages;
- :mod:`.data`: training excerpts drawn from a folder of audio;
- :mod:`.discriminators` and :mod:`.losses`: the GAN's critics and the losses of the recipe;
- :mod:`.trainer`: one optimisation step, the weight average, the precision and device;
- :mod:`.state`: saving, resuming and exporting a run (full and compact training states);
- :mod:`.release`: making exported weights the next version of the bundled model;
- :mod:`.__main__`: the command line, ``python -m dacli.training``.

This package runs from a source checkout (``make install`` installs it editable); the wheel leaves it
out, since encoding and decoding never need it. Errors are raised as :class:`dacli.DacliError`; only
the command line turns them into an exit status.
"""
