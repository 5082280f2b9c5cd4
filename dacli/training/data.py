"""Training excerpts: every file of a folder, mono at the model rate, in memory, drawn as
loudness-normalised excerpts."""

import numpy as np
import torch

from .. import audio
from ..errors import DacliError
from ..fileio import AUDIO_IN, find_inputs


class TrainingAudio:
    """All audio of a folder, mono at the model rate, in memory; draws loudness-normalised excerpts.

    Most excerpts are redrawn until louder than ``min_loudness`` and then normalised alone to
    ``target``. A ``quiet_share`` of them is taken wherever it falls and given the gain that normalises
    its whole file to ``target``, as ``dacli encode`` does, so that pauses, fades and silence reach the
    model at the level they have in use (without them it never learns to keep a pause silent)."""

    def __init__(self, folder, sample_rate, min_loudness=-40.0, target=-16.0, quiet_share=0.0):
        files = [f for f, _ in find_inputs([folder], AUDIO_IN)]
        if not files:
            raise DacliError(f"no audio files under {folder}")
        self.clips = []
        for p in files:
            x, sr = audio.read(p)
            self.clips.append(audio.resample(x.mean(1), sr, sample_rate).astype(np.float32))
        self.weights = np.array([len(c) for c in self.clips], dtype=np.float64)
        self.weights /= self.weights.sum()
        self.rate, self.min_loudness, self.target = sample_rate, min_loudness, target
        self.quiet_share = quiet_share
        self.seconds = sum(len(c) for c in self.clips) / sample_rate
        self._file_gain = {}

    def _cut(self, rng, n):
        i = rng.choice(len(self.clips), p=self.weights)
        c = self.clips[i]
        start = rng.integers(0, max(1, len(c) - n))
        x = c[start:start + n]
        return i, np.pad(x, (0, n - len(x)))

    def file_gain(self, i):
        """The gain that brings file ``i`` to the target loudness (computed once)."""
        if i not in self._file_gain:
            self._file_gain[i] = audio.db_to_gain(self.target - audio.loudness(self.clips[i], self.rate))
        return self._file_gain[i]

    def excerpt(self, rng, n, quiet_share=None):
        share = self.quiet_share if quiet_share is None else quiet_share
        if share and rng.random() < share:
            i, x = self._cut(rng, n)
            x = x * self.file_gain(i)
        else:
            for _ in range(20):
                _, x = self._cut(rng, n)
                db = audio.loudness(x, self.rate)
                if db > self.min_loudness:
                    break
            x = x * audio.db_to_gain(self.target - db)
        peak = np.abs(x).max()
        return (x / peak if peak > 1 else x).astype(np.float32)

    def batch(self, rng, size, n, quiet_share=None):
        return torch.from_numpy(np.stack([self.excerpt(rng, n, quiet_share) for _ in range(size)]))[:, None]
