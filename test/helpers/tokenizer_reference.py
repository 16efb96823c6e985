"""transformers' view of a model directory's tokenizer, for lib/tokenizer.ts tests.
Usage: tokenizer_reference.py DIR CASES_JSON  (cases: {texts, chats, pairs}); prints JSON."""
import json
import sys

from transformers import AutoTokenizer, GenerationConfig


def ids_of(x):
    return x if isinstance(x, list) else x["input_ids"]


def main():
    d, cases = sys.argv[1], json.loads(sys.argv[2])
    t = AutoTokenizer.from_pretrained(d)
    try:
        gen_eos = GenerationConfig.from_pretrained(d).eos_token_id
    except OSError:
        gen_eos = None
    encoded = [t.encode(x) for x in cases["texts"]]
    prompt = lambda msgs: ids_of(t.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True))
    out = {
        "bos": t.bos_token_id, "eos": t.eos_token_id, "generation_eos": gen_eos,
        "encoded": encoded,
        "decoded": [t.decode(i) for i in encoded],
        "decoded_skip": [t.decode(i, skip_special_tokens=True) for i in encoded],
        "chats": [prompt(m) for m in cases["chats"]],
        # TRL's DPO tokenization: the prompt through the template, the answer alone plus EOS.
        "pairs": [prompt(p["messages"]) + t(p["response"], add_special_tokens=False)["input_ids"]
                  + [t.eos_token_id] for p in cases["pairs"]],
        "conversations": [ids_of(t.apply_chat_template(
            p["messages"] + [{"role": "assistant", "content": p["response"]}], tokenize=True))
            for p in cases["pairs"]],
    }
    print(json.dumps(out))


main()
