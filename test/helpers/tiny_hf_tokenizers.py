"""Writes two tiny Hugging Face tokenizers, trained here on a fixed corpus (no downloads):
  bytelevel/  byte-level BPE with ChatML special tokens (as Llama 3, Qwen2, SmolLM)
  metaspace/  SentencePiece-style BPE: Metaspace pre-tokenizer, byte fallback, <s> added by the
              post-processor and a template that writes its own bos_token (as Llama 2, Mistral)
Usage: tiny_hf_tokenizers.py OUT_DIR
"""
import json
import os
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Please produce a top-notch response that merits a perfect score of 10 out of 10.",
    "Write a short poem about the sea, the wind and the stars.",
    "def add(a, b):\n    return a + b\n",
    "What is 12 times 7? The answer is 84.",
    "Paris is the capital of France; Berlin is the capital of Germany.",
    "naïve café — résumé, 3.14, ünïcödé and emoji 🙂",
] * 20

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
          " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|im_start|>assistant\n' }}{% endif %}")

MISTRAL = ("{{ bos_token }}{% for message in messages %}"
           "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
           "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
           "{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
           "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}"
           "{% endfor %}")


def write(out, tok, config):
    os.makedirs(out, exist_ok=True)
    tok.save(os.path.join(out, "tokenizer.json"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)


def bytelevel(out):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    write(out, tok, {"tokenizer_class": "TokenizersBackend", "bos_token": None,
                     "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "chat_template": CHATML})


def metaspace(out):
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    bytes_ = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=["<unk>", "<s>", "</s>"] + bytes_,
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    write(out, tok, {"tokenizer_class": "TokenizersBackend", "add_bos_token": True,
                     "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
                     "unk_token": "<unk>", "chat_template": MISTRAL})


if __name__ == "__main__":
    bytelevel(os.path.join(sys.argv[1], "bytelevel"))
    metaspace(os.path.join(sys.argv[1], "metaspace"))
