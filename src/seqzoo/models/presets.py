"""Built-in presets. A preset only fills arguments of a builder."""

from __future__ import annotations

from seqzoo.layers.memory import MemN2N
from seqzoo.models.registry import register_model
from seqzoo.models.sequence_model import SequenceModel

_RNN_DEFAULTS = dict(d_model=128, n_layers=1, d_input=1, d_output=1)

register_model("rnn_tanh", SequenceModel, layer="rnn_tanh", description="Elman tanh RNN (seqzoo loop)",
               tags=("rnn",), **_RNN_DEFAULTS)
register_model("lstm", SequenceModel, layer="lstm", description="LSTM (seqzoo cell under the recurrent driver)",
               paper="Hochreiter & Schmidhuber 1997", tags=("rnn",), **_RNN_DEFAULTS)
register_model("gru", SequenceModel, layer="gru", description="GRU (seqzoo cell under the recurrent driver)",
               paper="Cho et al. 2014", tags=("rnn",), **_RNN_DEFAULTS)
register_model("lstm_native", SequenceModel, layer="lstm_native", description="torch.nn.LSTM (fused kernel)",
               tags=("rnn", "native"), **_RNN_DEFAULTS)
register_model("gru_native", SequenceModel, layer="gru_native", description="torch.nn.GRU (fused kernel)",
               tags=("rnn", "native"), **_RNN_DEFAULTS)
register_model("transformer", SequenceModel, layer="transformer", d_model=128, n_layers=2, final_norm=True, d_input=1,
               d_output=1, description="causal pre-norm transformer baseline (with a key/value cache for step)",
               paper="Vaswani et al. 2017; rotary positions: Su et al. 2021", tags=("attention",))

# Normalized recurrent cells: one cell, the normalization injected at its sites (LSTM: x, h, c; GRU: x, h).
_NORMED = [
    ("lstm_ln", "lstm", "layer", {}, "LayerNorm-LSTM (Ba et al. 2016 layout)", "Ba, Kiros & Hinton 2016"),
    ("lstm_bn", "lstm", "batch", {}, "recurrent BatchNorm LSTM, per-step statistics, gamma 0.1",
     "Cooijmans et al. 2016"),
    ("lstm_atn", "lstm", "atn", {"k": 25}, "Assorted-Time Normalization LSTM (window k=25)",
     "Pospisil, Zadorozhnyy & Ye 2022"),
    ("lstm_bln", "lstm", "bln", {}, "Batch-Layer-Normalized LSTM", "Ziaee & Cano 2022"),
    ("gru_ln", "gru", "layer", {}, "LayerNorm-GRU", "Ba, Kiros & Hinton 2016"),
    ("gru_atn", "gru", "atn", {"k": 25}, "Assorted-Time Normalization GRU (window k=25)",
     "Pospisil, Zadorozhnyy & Ye 2022"),
]
for _name, _cell, _norm, _nkw, _desc, _paper in _NORMED:
    _kw = {"norm": _norm, **({"norm_kwargs": _nkw} if _nkw else {})}
    register_model(_name, SequenceModel, layer=_cell, layer_kwargs=_kw, description=_desc, paper=_paper,
                   tags=("rnn", "norm"), **_RNN_DEFAULTS)

# Norms between stacked layers (spec rnn-cells-and-normalization.md §4.1, the BLN paper's RNN layout): two fused LSTM
# layers, each output normalized (layer -> norm -> layer -> norm -> head); batch and BLN use per-time-step statistics.
for _name, _norm, _desc in (("lstm2_ln", "layer", "LayerNorm"), ("lstm2_bn", "batch", "per-step BatchNorm"),
                            ("lstm2_bln", "bln", "per-step Batch Layer Normalization")):
    register_model(_name, SequenceModel, layer="lstm_native", post_norm=_norm, d_model=64, n_layers=2, d_input=1,
                   d_output=1, description=f"two-layer LSTM with {_desc} after each layer (BLN paper's RNN layout)",
                   paper="Ziaee & Cano 2022 (arXiv 2209.08898)", tags=("rnn", "norm"))

# NC-GRU (Mucllari et al. 2022): GRU with an orthogonal candidate matrix U_c (scaled Cayley transform, Neumann-updated
# inverse); nc_gru_r also makes U_r orthogonal, each matrix with its own parametrization.
register_model("nc_gru", SequenceModel, layer="nc_gru", description="NC-GRU(U_c): GRU with orthogonal U_c, modReLU",
               paper="Mucllari et al. 2022 (arXiv 2208.06496)", tags=("rnn", "orthogonal"), **_RNN_DEFAULTS)
register_model("nc_gru_r", SequenceModel, layer="nc_gru", layer_kwargs={"orthogonal_reset": True},
               description="NC-GRU(U_c, U_r): GRU with orthogonal U_c and U_r, modReLU",
               paper="Mucllari et al. 2022 (arXiv 2208.06496)", tags=("rnn", "orthogonal"), **_RNN_DEFAULTS)

# Convolutional networks (spec convolutional-and-state-space.md §1, §3, §4). Each layer is a whole network of residual
# blocks (its blocks differ in dilation or width), so these presets stack n_layers=1 and add no outer residual;
# d_model is the embedding width and, for uniform networks, the width of every block.
_GCNN14 = ([[[6, 128]]] * 3 + [[[1, 128]]] + [[[5, 128]]] * 4 + [[[1, 128]]] + [[[4, 128]]] * 3 + [[[4, 128]]]
           + [[[4, 256]]])
_GCNN14_BOTTLENECK = ([[[5, 64]]] + [[[1, 16], [5, 16], [1, 64]]] * 3 + [[[1, 64], [5, 64], [1, 128]]] * 3
                      + [[[1, 128], [5, 128], [1, 256]]] * 6 + [[[1, 128], [5, 128], [1, 512]]])
_CONV_DEFAULTS = dict(n_layers=1, d_input=1, d_output=1)
_GCNN8 = {"n_blocks": 8, "kernel_size": 4, "activation": "glu"}
_GCNN8_SMALL = {"n_blocks": 2, "kernel_size": 3}  # the conformance suite's size
register_model("gcnn", SequenceModel, layer="gcnn", d_model=256, layer_kwargs=_GCNN8,
               description="gated convolutional LM, GCNN-8 style: 8 residual GLU blocks, k=4, weight norm "
                           "(activation= glu | gtu | relu | tanh | linear | bilinear for the ablation)",
               paper="Dauphin et al. 2017", tags=("conv",),
               conformance={"layer_kwargs": _GCNN8_SMALL}, **_CONV_DEFAULTS)
register_model("gcnn_adaptive", SequenceModel, layer="gcnn", d_model=256, head="adaptive", layer_kwargs=_GCNN8,
               description="the gcnn preset with an adaptive softmax head (as the paper's LMs; cutoffs= sets the "
                           "clusters, default [V/5, V/2]); outputs are log-probabilities",
               paper="Dauphin et al. 2017; adaptive softmax: Grave et al. 2017", tags=("conv",),
               conformance={"layer_kwargs": _GCNN8_SMALL, "div_value": 2.0}, **_CONV_DEFAULTS)
register_model("gcnn14", SequenceModel, layer="gcnn", d_model=32, layer_kwargs={"blocks": _GCNN14},
               description="GCNN-14 (WikiText-103 layout) at 1/8 width: 3x[6,128], [1,128], 4x[5,128], [1,128], "
                           "3x[4,128], [4,128], [4,256]",
               paper="Dauphin et al. 2017", tags=("conv",),
               conformance={"layer_kwargs": {"blocks": [[[3, 8]], [[1, 8]], [[2, 6]]]}}, **_CONV_DEFAULTS)
register_model("gcnn14_bottleneck", SequenceModel, layer="gcnn", d_model=16,
               layer_kwargs={"blocks": _GCNN14_BOTTLENECK},
               description="GCNN-14 Bottleneck (Google Billion Word layout) at 1/8 width: residual bottleneck "
                           "blocks [1x1 reduce, k=5, 1x1 expand]",
               paper="Dauphin et al. 2017", tags=("conv",),
               conformance={"layer_kwargs": {"blocks": [[[3, 8]], [[1, 4], [3, 4], [1, 6]]]}}, **_CONV_DEFAULTS)
register_model("tcn", SequenceModel, layer="tcn", d_model=32,
               layer_kwargs={"levels": 6, "kernel_size": 7, "dropout": 0.0, "init": "effective"},
               description="temporal convolutional network: causal dilated residual blocks (dilation 2^i), weight "
                           "norm with the official code's effective init",
               paper="Bai, Kolter & Koltun 2018", tags=("conv",),
               conformance={"layer_kwargs": {"levels": 2, "kernel_size": 3}}, **_CONV_DEFAULTS)
register_model("cdil", SequenceModel, layer="cdil", d_model=32, decoder="mean",
               layer_kwargs={"levels": 5, "kernel_size": 3, "padding": "circular"},
               description="CDIL-CNN: symmetric circular dilated convs (dilation 2^i), mean of per-position logits",
               paper="Cheng et al. 2022", tags=("conv",),
               conformance={"layer_kwargs": {"levels": 3}}, **_CONV_DEFAULTS)
register_model("dilated_cnn", SequenceModel, layer="cdil", d_model=32, decoder="mean",
               layer_kwargs={"levels": 5, "kernel_size": 3, "padding": "zeros"},
               description="zero-padded symmetric dilated CNN (the DIL baseline of CDIL-CNN)",
               paper="Cheng et al. 2022", tags=("conv",),
               conformance={"layer_kwargs": {"levels": 3}}, **_CONV_DEFAULTS)

# S5 (spec §5): the layer holds its own pre-norm and residual, so the model adds neither.
register_model("s5", SequenceModel, layer="s5", d_model=64, n_layers=2, d_input=1, d_output=1,
               layer_kwargs={"state_size": 64, "blocks": 4},
               description="S5 simplified state space layers (MIMO diagonal SSM, HiPPO-N init, chunked scan)",
               paper="Smith, Warrington & Linderman 2023", tags=("ssm",),
               conformance={"layer_kwargs": {"state_size": 8, "blocks": 2}})
register_model("s5_bidir", SequenceModel, layer="s5", d_model=64, n_layers=2, d_input=1, d_output=1,
               layer_kwargs={"state_size": 64, "blocks": 4, "bidirectional": True},
               description="bidirectional S5 (not causal; for sequence classification such as ListOps)",
               paper="Smith, Warrington & Linderman 2023", tags=("ssm",),
               conformance={"layer_kwargs": {"state_size": 8, "blocks": 2}})

# ARMA cell (Schiele et al. 2022): the raw series goes straight into the cell (encoder="none"), which feeds back its
# own past forecasts; k = d_input series, d_model / k units. conv_arma: flattened (C, H, W) frames, d_model = u*H*W.
register_model("arma", SequenceModel, layer="arma", encoder="none", d_model=1, n_layers=1, d_input=1, d_output=1,
               layer_kwargs={"p": 2, "q": 2, "activation": "identity"},
               description="ARMA(2,2) cell: linear, one unit per series (the classical one-step ARMA predictor)",
               paper="Schiele, Berninger & Rügamer 2022 (arXiv 2208.14919)", tags=("rnn", "forecasting"),
               conformance={"d_input": 2})
register_model("arma_relu", SequenceModel, layer="arma", encoder="none", d_model=4, n_layers=1, d_input=1,
               d_output=1, layer_kwargs={"p": 2, "q": 2, "activation": "relu"},
               description="shallow nonlinear ARMA: ReLU ARMA(2,2) units per series, then a linear head",
               paper="Schiele, Berninger & Rügamer 2022 (arXiv 2208.14919)", tags=("rnn", "forecasting"),
               conformance={"d_input": 2})
register_model("conv_arma", SequenceModel, layer="conv_arma", encoder="none", d_input=64, d_model=256, n_layers=1,
               d_output=64, layer_kwargs={"height": 8, "width": 8, "p": 2, "q": 2, "kernel_size": 3},
               description="ConvARMA on flattened 1x8x8 frames: 4 ReLU channels of 3x3-conv ARMA(2,2), dense head",
               paper="Schiele, Berninger & Rügamer 2022 (arXiv 2208.14919)", tags=("rnn", "conv", "forecasting"),
               conformance={"d_input": 4, "layer_kwargs": {"height": 2, "width": 2}})

# State-regularized RNNs (Wang & Niepert 2019): the cell's state is a soft (temperature tau) mixture of k learnable
# centroids; with transition="hard" (or tau -> 0) the RNN is a finite-state machine that extract_dfa reads off.
_SR = [("sr_gru", "state-regularized GRU"), ("sr_lstm", "state-regularized LSTM (h regularized, c continuous)"),
       ("sr_lstm_p", "state-regularized peephole LSTM (separate peepholes p_i, p_f, p_o)")]
for _name, _desc in _SR:
    register_model(_name, SequenceModel, layer=_name, layer_kwargs={"n_centroids": 10, "temperature": 1.0},
                   description=f"{_desc}, k=10 centroids, soft transitions (tau=1)",
                   paper="Wang & Niepert 2019 (arXiv 1901.08817)", tags=("rnn", "automata"), **_RNN_DEFAULTS)

# Stack-augmented RNNs (DuSell & Chiang 2020/2022 and their baselines): a 20-unit LSTM controller reading
# [x_t ; r_{t-1}]. The plain-LSTM baseline is the "lstm" preset. The nondeterministic stacks cost O(n^3) (full DP),
# so their conformance sizes are tiny (|Q| = |Gamma| = 2, one layer).
_STACK_DEFAULTS = dict(d_model=20, n_layers=1, d_input=1, d_output=1)
_NS_TINY = {"n_layers": 1, "layer_kwargs": {"n_states": 2, "n_symbols": 2}}
register_model("superposition_rnn", SequenceModel, layer="superposition_rnn", layer_kwargs={"stack_size": 10},
               description="LSTM + superposition stack (push/pop/no-op mixture)", paper="Joulin & Mikolov 2015",
               tags=("rnn", "stack"), conformance={"layer_kwargs": {"stack_size": 3}}, **_STACK_DEFAULTS)
register_model("stratification_rnn", SequenceModel, layer="stratification_rnn", layer_kwargs={"stack_size": 10},
               description="LSTM + stratification stack (push/pop strengths)", paper="Grefenstette et al. 2015",
               tags=("rnn", "stack"), conformance={"layer_kwargs": {"stack_size": 3}}, **_STACK_DEFAULTS)
register_model("ns_rnn", SequenceModel, layer="ns_rnn", layer_kwargs={"n_states": 2, "n_symbols": 3},
               description="NS-RNN: LSTM + nondeterministic stack (normalized weights, reads top symbols)",
               paper="DuSell & Chiang 2020", tags=("rnn", "stack"), conformance=_NS_TINY, **_STACK_DEFAULTS)
register_model("rns_rnn", SequenceModel, layer="rns_rnn", layer_kwargs={"n_states": 2, "n_symbols": 3},
               description="RNS-RNN: nondeterministic stack with unnormalized weights, reads (state, top)",
               paper="DuSell & Chiang 2022", tags=("rnn", "stack"), conformance=_NS_TINY, **_STACK_DEFAULTS)
register_model("rns_rnn_limited", SequenceModel, layer="rns_rnn_limited",
               layer_kwargs={"n_states": 2, "n_symbols": 3, "window": 10},
               description="memory-limited RNS-RNN (window D, fixed-size state for unbounded streams)",
               paper="DuSell & Chiang 2022", tags=("rnn", "stack"),
               conformance={"n_layers": 1, "layer_kwargs": {"n_states": 2, "n_symbols": 2, "window": 4}},
               **_STACK_DEFAULTS)

# Quantized LSTM (QNN, Hubara et al. 2016; spec rnn-cells-and-normalization.md §8.2): the lstm cell with its weight
# site (W_ih, W_hh) and activation sites (gates, h) at 4 bits; embedding and output head stay floating point.
# quant="w2a2" (or "w1a1", "w4a32", ...; None = float) sets other widths, like norm= on the lstm preset.
register_model("lstm_q", SequenceModel, layer="lstm", quant="w4a4",
               description="quantized LSTM: W4/A4 (weights, gates and hidden state; embedding and head in float)",
               paper="Hubara et al. 2016 (arXiv 1609.07061)", tags=("rnn", "quantized"), **_RNN_DEFAULTS)
# Block-Recurrent Transformer (Hutchins et al. 2022; spec stacks-memory-... §3.5 small setting): one layer holds the
# whole 4-layer sliding-window network (its own residuals and pre-norms), blocks of W=64, S=64 states in layer 3.
_BRT = {"depth": 4, "n_heads": 4, "window": 64, "n_states": 64, "recurrent_layers": [2], "gate": "fixed",
        "config": "skip"}
# the conformance suite's size; windows 2, 4, 3 put its chunk cut (t=3) inside a block and on a block boundary
_BRT_SMALL = {"depth": 2, "n_heads": 2, "n_states": 4, "d_ff": 16}
_BRT_PAPER = "Hutchins et al. 2022 (arXiv 2203.07852)"
register_model("brt", SequenceModel, layer="block_recurrent", d_model=128, n_layers=1, final_norm=True, d_input=1,
               d_output=1, layer_kwargs=_BRT, paper=_BRT_PAPER, tags=("attention", "recurrent-memory"),
               description="Block-Recurrent Transformer Rec:fixed:skip: sliding-window Transformer-XL (W=64), "
                           "64 recurrent states in layer 3 of 4, fixed gate",
               conformance={"n_layers": 1, "layer_kwargs": {**_BRT_SMALL, "window": 2, "recurrent_layers": [1]}})
register_model("brt_lstm_gate", SequenceModel, layer="block_recurrent", d_model=128, n_layers=1, final_norm=True,
               d_input=1, d_output=1, layer_kwargs={**_BRT, "gate": "lstm"}, paper=_BRT_PAPER,
               tags=("attention", "recurrent-memory"),
               description="Block-Recurrent Transformer Rec:lstm:skip (the LSTM-gate ablation of brt)",
               conformance={"n_layers": 1, "layer_kwargs": {**_BRT_SMALL, "window": 4, "recurrent_layers": [0]}})
register_model("slide_xl", SequenceModel, layer="block_recurrent", d_model=128, n_layers=1, final_norm=True,
               d_input=1, d_output=1, layer_kwargs={**_BRT, "recurrent_layers": []}, paper=_BRT_PAPER,
               tags=("attention",),
               description="sliding-window Transformer-XL baseline of brt (Slide; XL:W when trained with bptt=W): "
                           "4 layers, blocks of W=64, no recurrence",
               conformance={"n_layers": 1, "layer_kwargs": {**_BRT_SMALL, "window": 3, "recurrent_layers": []}})
# End-to-end memory networks (Sukhbaatar et al. 2015; spec §2): a question-answering model (model_kind "qa") over a
# story of sentence memories, not a stack of sequence layers; vocab_size and memory_size come from the task (babi).
_MEMN2N = dict(d_model=20, hops=3, temporal=True, random_noise=0.1, linear_start=True, tying="adjacent")
_MEMN2N_TINY = {"vocab_size": 11, "d_model": 6, "memory_size": 6}  # the conformance suite's size
register_model("memn2n", MemN2N, encoding="pe", description="MemN2N: 3 hops, position encoding, temporal encoding, "
               "linear start, random noise, adjacent tying (the paper's PE LS RN)",
               paper="Sukhbaatar, Szlam, Weston & Fergus 2015 (arXiv 1503.08895)", tags=("memory", "qa"),
               conformance=_MEMN2N_TINY, **_MEMN2N)
register_model("memn2n_bow", MemN2N, encoding="bow", description="MemN2N with bag-of-words sentences (otherwise "
               "as memn2n: 3 hops, TE, LS, RN, adjacent tying)",
               paper="Sukhbaatar, Szlam, Weston & Fergus 2015 (arXiv 1503.08895)", tags=("memory", "qa"),
               conformance=_MEMN2N_TINY, **_MEMN2N)
