"""Encoder-decoder (seq2seq) models: GNMT, ConvS2S, the shared decoding module, and their presets.

A seq2seq model is its own model kind (``seqzoo.models.seq2seq.base``): it reads ``inputs`` (source), ``mask`` and
``prev`` (decoder input) and is decoded through ``start``/``step``; ``tests/test_seq2seq_conformance.py`` runs every
preset tagged ``seq2seq`` through the conformance checks that apply to it (gradients, save/load, padding and batch
invariance, decoder causality, ``step`` == teacher-forced forward).
"""

from seqzoo.models.registry import register_model
from seqzoo.models.seq2seq.base import BOS, EOS, PAD, UNK, Seq2SeqModel
from seqzoo.models.seq2seq.convs2s import ConvS2S
from seqzoo.models.seq2seq.gnmt import GNMT

_GNMT_PAPER = "Wu et al. 2016 (arXiv 1609.08144)"
_TINY_GNMT = {"d_model": 8, "dropout": 0.0}
register_model("gnmt_small", GNMT, d_model=256, n_encoder_layers=4, n_decoder_layers=4, dropout=0.2,
               description="GNMT 4+4 x 256: bidirectional bottom encoder layer, residuals from layer 3, MLP "
                           "attention from the bottom decoder layer fed to all decoder layers",
               paper=_GNMT_PAPER, tags=("seq2seq", "rnn", "attention"), conformance=_TINY_GNMT)
register_model("gnmt", GNMT, d_model=512, n_encoder_layers=8, n_decoder_layers=8, dropout=0.2,
               description="GNMT 8+8 as the paper (width 512 here; the paper's is 1024: d_model=1024)",
               paper=_GNMT_PAPER, tags=("seq2seq", "rnn", "attention"),
               conformance={**_TINY_GNMT, "n_encoder_layers": 3, "n_decoder_layers": 3})
register_model("convs2s_small", ConvS2S, d_embed=256, d_model=256, n_encoder_layers=4, n_decoder_layers=3,
               kernel_size=3, d_out_embed=256, dropout=0.2,
               description="ConvS2S, fconv_iwslt_de_en-like: encoder 4 x 256 k3, decoder 3 x 256 k3, multi-step "
                           "attention, weight norm",
               paper="Gehring et al. 2017 (arXiv 1705.03122)", tags=("seq2seq", "conv", "attention"),
               conformance={"d_embed": 6, "d_model": 8, "d_out_embed": 6, "dropout": 0.0, "max_positions": 64})

__all__ = ["BOS", "EOS", "GNMT", "PAD", "UNK", "ConvS2S", "Seq2SeqModel"]
