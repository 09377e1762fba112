"""CaptioningRNN: image features in, a caption out, one word per time step (the course's
``cs231n/classifiers/rnn.py``).

The image feature vector, projected, is the recurrent network's initial hidden state; each
step reads the embedding of the previous word and scores the next one. Training feeds the
true caption (teacher forcing); sampling feeds back the best-scoring word.
"""

import numpy as np

from convlab._checks import as_float_array, check_int
from convlab._course_random import CourseRandom
from convlab.classifiers.base import Classifier
from convlab.layers import affine_backward, affine_forward
from convlab.rnn_layers import (
    lstm_backward,
    lstm_forward,
    lstm_step_forward,
    rnn_backward,
    rnn_forward,
    rnn_step_forward,
    temporal_affine_backward,
    temporal_affine_forward,
    temporal_softmax_loss,
    word_embedding_backward,
    word_embedding_forward,
)

__all__ = ["CaptioningRNN"]

_GATES = {"rnn": 1, "lstm": 4}


class CaptioningRNN(Classifier):
    """A vanilla-RNN or LSTM captioning model.

    word_to_idx: the vocabulary, {word: index in [0, V)}, with '<NULL>' (padding) and, for
    sampling, '<START>' and '<END>'; input_dim: D, the image feature size; wordvec_dim: W;
    hidden_dim: H; cell_type: 'rnn' or 'lstm'; dtype: float32 for training, float64 for
    gradient checks; seed: None draws the initial weights from NumPy's global state in the
    course's order, an int from its own Generator. No regularisation, as in the course.

    params: W_embed (V, W), W_proj (D, H), b_proj (H,), Wx (W, gH), Wh (H, gH), b (gH,)
    with g = 1 (rnn) or 4 (lstm), W_vocab (H, V), b_vocab (V,).
    """

    runs_on_gpu = False  # convlab.rnn_layers are NumPy code

    def __init__(self, word_to_idx, input_dim=512, wordvec_dim=128, hidden_dim=128,
                 cell_type="rnn", dtype=np.float32, seed=None):
        if cell_type not in _GATES:
            raise ValueError(f'Invalid cell_type "{cell_type}"; choose "rnn" or "lstm"')
        if not isinstance(word_to_idx, dict) or "<NULL>" not in word_to_idx:
            raise ValueError("word_to_idx must be a dict {word: index} holding '<NULL>'")
        indices = sorted(word_to_idx.values())
        if any(isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 0
               for i in indices):
            raise ValueError("word_to_idx must map every word to an integer index >= 0")
        input_dim, wordvec_dim, hidden_dim = (
            check_int(v, name, 1) for v, name in ((input_dim, "input_dim"),
                                                 (wordvec_dim, "wordvec_dim"),
                                                 (hidden_dim, "hidden_dim")))
        self.init_args = dict(word_to_idx={w: int(i) for w, i in word_to_idx.items()},
                              input_dim=input_dim, wordvec_dim=wordvec_dim,
                              hidden_dim=hidden_dim, cell_type=cell_type,
                              dtype=np.dtype(dtype).name)
        self.cell_type = cell_type
        self.dtype = np.dtype(dtype)
        self.word_to_idx = word_to_idx
        self.idx_to_word = {i: w for w, i in word_to_idx.items()}
        self._null = word_to_idx["<NULL>"]
        self._start = word_to_idx.get("<START>")
        self._end = word_to_idx.get("<END>")
        # The course sizes the vocabulary by its length (its tests leave gaps in the
        # indices); a caption with an index beyond it is refused when it is embedded.
        V = len(word_to_idx)

        rng = CourseRandom(seed)  # seed None: NumPy's global state, in the course's order
        gates = _GATES[cell_type]
        p = {}
        p["W_embed"] = rng.randn(V, wordvec_dim) / 100
        p["W_proj"] = rng.randn(input_dim, hidden_dim) / np.sqrt(input_dim)
        p["b_proj"] = np.zeros(hidden_dim)
        p["Wx"] = rng.randn(wordvec_dim, gates * hidden_dim) / np.sqrt(wordvec_dim)
        p["Wh"] = rng.randn(hidden_dim, gates * hidden_dim) / np.sqrt(hidden_dim)
        p["b"] = np.zeros(gates * hidden_dim)
        p["W_vocab"] = rng.randn(hidden_dim, V) / np.sqrt(hidden_dim)
        p["b_vocab"] = np.zeros(V)
        self.params = {name: value.astype(self.dtype) for name, value in p.items()}

    def _initial_state(self, features):
        features = as_float_array(features, "features", ndim=2)
        if features.shape[1] != self.params["W_proj"].shape[0]:
            raise ValueError(f"features must be (N, {self.params['W_proj'].shape[0]}), got "
                             f"{features.shape}")
        return affine_forward(features.astype(self.dtype, copy=False), self.params["W_proj"],
                              self.params["b_proj"])

    def loss(self, features, captions):
        """Teacher-forced loss of ``captions`` given ``features``.

        features: (N, D); captions: (N, T) word indices, each starting with '<START>'; the
        model reads captions[:, :-1] and is scored on captions[:, 1:], except at '<NULL>'.
        Returns loss (summed over time, averaged over N) and grads for every parameter.
        """
        captions = np.asarray(captions)
        if captions.ndim != 2 or captions.shape[1] < 2:
            raise ValueError(f"captions must be (N, T) with T >= 2, got {captions.shape}")
        captions_in, captions_out = captions[:, :-1], captions[:, 1:]
        mask = captions_out != self._null
        p = self.params
        sequence_forward, sequence_backward = (
            (rnn_forward, rnn_backward) if self.cell_type == "rnn"
            else (lstm_forward, lstm_backward))

        h0, proj_cache = self._initial_state(features)                          # (N, H)
        if h0.shape[0] != captions.shape[0]:
            raise ValueError(f"{h0.shape[0]} feature vectors but {captions.shape[0]} captions")
        words, embed_cache = word_embedding_forward(captions_in, p["W_embed"])  # (N, T-1, W)
        h, seq_cache = sequence_forward(words, h0, p["Wx"], p["Wh"], p["b"])    # (N, T-1, H)
        scores, vocab_cache = temporal_affine_forward(h, p["W_vocab"], p["b_vocab"])
        loss, dscores = temporal_softmax_loss(scores, captions_out, mask)

        grads = {}
        dh, grads["W_vocab"], grads["b_vocab"] = temporal_affine_backward(dscores, vocab_cache)
        dwords, dh0, grads["Wx"], grads["Wh"], grads["b"] = sequence_backward(dh, seq_cache)
        grads["W_embed"] = word_embedding_backward(dwords, embed_cache)
        _, grads["W_proj"], grads["b_proj"] = affine_backward(dh0, proj_cache)
        return loss, grads

    def sample(self, features, max_length=30):
        """Greedy captions for ``features`` (N, D): start from '<START>' and feed back the
        highest-scoring word at every step. Returns captions (N, max_length) int32 (the
        words after '<START>'; the course's version keeps going past '<END>', and so does
        this one, so decode_captions stops at it)."""
        if self._start is None:
            raise ValueError("sampling needs '<START>' in word_to_idx")
        max_length = check_int(max_length, "max_length", 1)
        p = self.params
        prev_h, _ = self._initial_state(features)
        N = prev_h.shape[0]
        prev_c = np.zeros_like(prev_h)
        captions = np.full((N, max_length), self._null, dtype=np.int32)
        word = np.full(N, self._start)
        for t in range(max_length):
            x = p["W_embed"][word]                                      # (N, W)
            if self.cell_type == "rnn":
                prev_h, _ = rnn_step_forward(x, prev_h, p["Wx"], p["Wh"], p["b"])
            else:
                prev_h, prev_c, _ = lstm_step_forward(x, prev_h, prev_c, p["Wx"], p["Wh"],
                                                      p["b"])
            word = np.argmax(prev_h @ p["W_vocab"] + p["b_vocab"], axis=1)  # (N,)
            captions[:, t] = word
        return captions
