"""GPT-2 detokenization: input_ids -> text_output, through the same prefix-offset decoder the
streaming loop uses, so multi-byte characters (emoji, CJK) split across tokens come out whole."""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from detok import IncrementalDecoder
from tokenizers import Tokenizer
from tritonyard_contract.tensors import INPUT_IDS, TEXT_OUTPUT

TOKENIZER_FILE = "tokenizer.json"
INPUT, OUTPUT = INPUT_IDS.name, TEXT_OUTPUT.name


class TritonPythonModel:
    """Each row of ids becomes one text; ids outside the vocabulary fail only their request."""

    def initialize(self, args: dict) -> None:
        json.loads(args["model_config"])
        self.tokenizer = Tokenizer.from_file(
            str(Path(args["model_repository"]) / args["model_version"] / TOKENIZER_FILE)
        )
        self.vocab_size = self.tokenizer.get_vocab_size()

    def execute(self, requests: list) -> list:
        return [self._detokenize(r) for r in requests]

    def _detokenize(self, request):
        ids = pb_utils.get_input_tensor_by_name(request, INPUT).as_numpy()
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(
                    f"{INPUT}: ids must be in [0, {self.vocab_size}), got {ids.min()}..{ids.max()}",
                    pb_utils.TritonError.INVALID_ARG,
                )
            )
        texts = []
        for row in ids.reshape(ids.shape[0], -1):
            decoder = IncrementalDecoder(self.tokenizer)
            texts.append("".join(decoder.push(int(t)) for t in row).encode())
        return pb_utils.InferenceResponse([pb_utils.Tensor(OUTPUT, np.array(texts, dtype=np.object_).reshape(-1, 1))])

    def finalize(self) -> None:
        self.tokenizer = None
