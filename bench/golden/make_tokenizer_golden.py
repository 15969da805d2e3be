"""Tiny vocab-only GGUF files for every tokenizer kind PAL reads, and llama.cpp's token ids for
awkward strings on each (llama-cpp-python, vocab_only=True).

Usage: python make_tokenizer_golden.py OUT_DIR
Writes OUT_DIR/{spm,gpt2,llama-bpe,qwen2,smollm}.gguf (a few KB each) and OUT_DIR/golden.json.
"""
import json
import os
import sys

import gguf
from llama_cpp import Llama

TEXTS = [
    "Hello world",
    "the cat in the hat, then the end",
    "  double  spaces   and trailing ",
    "digits 1234567890 and 3.14159",
    "Accents: café naïve",
    "CJK 日本語 한국어",
    "Emoji 🙂🚀 done",
    "Special <s> inside </s> text",
    "tabs\tand\nnew\n\nlines",
    "don't won't it's I'm we'll they've",
    "MiXeD CaSe!? (yes) [no]",
]


def byte_symbols():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def base(w, model):
    w.add_uint32("llama.context_length", 128)
    w.add_uint32("llama.embedding_length", 64)
    w.add_uint32("llama.block_count", 1)
    w.add_uint32("llama.feed_forward_length", 64)
    w.add_uint32("llama.attention.head_count", 1)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_string("tokenizer.ggml.model", model)


def write_spm(path):
    w = gguf.GGUFWriter(path, "llama")
    base(w, "llama")
    toks, scores, types = ["<unk>", "<s>", "</s>"], [0.0, 0.0, 0.0], [2, 3, 3]
    for b in range(256):
        toks.append(f"<0x{b:02X}>"); scores.append(0.0); types.append(6)
    pieces = ["▁", "e", "t", "a", "o", "i", "n", "s", "h", "r", "d", "l", "c", "u", "m", "w", "f", "g", "y", "p",
              "b", "v", "k", "x", "j", "q", "z", "T", "H", "M", "D", "C", "S", "I", "A", "W", "N", ",", ".", "'",
              "1", "2", "3", "4", "5", "!", "?", "(", ")", "[", "]", "é", "ï",
              "th", "he", "in", "er", "an", "▁t", "▁a", "▁th", "▁the", "en", "on", "at", "nd", "▁c", "▁h",
              "ha", "▁ha", "▁hat", "at", "ca", "▁ca", "▁cat", "▁in", "▁en", "▁end", "ll", "▁w", "▁wo", "or",
              "orl", "orld", "▁world", "He", "Hel", "Hell", "Hello", "▁Hello", "▁▁", "▁▁▁"]
    seen = set()
    for i, p in enumerate(pieces):
        if p in seen:
            continue
        seen.add(p)
        toks.append(p); scores.append(-float(i)); types.append(1)
    w.add_token_list(toks)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()


def write_bpe(path, pre):
    w = gguf.GGUFWriter(path, "llama")
    base(w, "gpt2")
    w.add_string("tokenizer.ggml.pre", pre)
    sym = byte_symbols()
    toks = ["<s>", "</s>"] + [sym[b] for b in range(256)]
    types = [3, 3] + [1] * 256
    merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "a t", "Ġ c", "Ġc at", "Ġ h", "Ġh at", "e n", "Ġ en", "Ġen d",
              "o r", "Ġ w", "Ġw or", "Ġwor l", "Ġworl d", "H e", "He l", "Hel l", "Hell o", "1 2", "12 3", "Ġ Ġ",
              "' s", "' t", "o n", "d on", "Ġ don"]
    for m in merges:
        t = m.replace(" ", "")
        if t not in toks:
            toks.append(t); types.append(1)
    w.add_token_list(toks)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    w.add_add_bos_token(False)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()


def main(out):
    os.makedirs(out, exist_ok=True)
    files = {"spm": None, "gpt2": "gpt-2", "llama-bpe": "llama-bpe", "qwen2": "qwen2", "smollm": "smollm"}
    golden = {}
    for name, pre in files.items():
        path = os.path.join(out, f"{name}.gguf")
        if pre is None:
            write_spm(path)
        else:
            write_bpe(path, pre)
        llm = Llama(model_path=path, vocab_only=True, verbose=False)
        golden[name] = [{"text": t, "ids": llm.tokenize(t.encode(), add_bos=True, special=True)} for t in TEXTS]
    with open(os.path.join(out, "golden.json"), "w") as f:
        json.dump({"source": "llama-cpp-python vocab_only, tokenize(add_bos=True, special=True)", "files": golden},
                  f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main(sys.argv[1])
