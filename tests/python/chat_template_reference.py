"""Chat prompts rendered by transformers, the reference for mlx-node's renderChat.

Usage: chat_template_reference.py SPEC_JSON OUT_JSON
  SPEC_JSON: {"templates": [...], "conversations": [...]}
    template:     {"name", "dir"}  a tokenizer directory: AutoTokenizer(dir).apply_chat_template(tokenize=False)
                  {"name", "template", "specialTokens"}  a bare template: transformers' render_jinja_template
                  (what apply_chat_template calls) with the given special tokens as variables, as
                  apply_chat_template passes the tokenizer's special_tokens_map
    conversation: {"name", "messages", "tools"?, "addGenerationPrompt", "variables"?}
Writes {"versions", "results": {template: {conversation: {"text"} | {"error", "errorType"}}}}.
"""
import json
import sys


def render(template, conversation, tokenizers):
    from transformers.utils.chat_template_utils import render_jinja_template

    kwargs = dict(conversation.get("variables") or {})
    tools = conversation.get("tools")
    generation = conversation["addGenerationPrompt"]
    if "dir" in template:
        tok = tokenizers[template["name"]]
        return tok.apply_chat_template(conversation["messages"], tools=tools, add_generation_prompt=generation, tokenize=False, **kwargs)
    rendered, _ = render_jinja_template(
        conversations=[conversation["messages"]],
        tools=tools,
        chat_template=template["template"],
        add_generation_prompt=generation,
        **{**template["specialTokens"], **kwargs},
    )
    return rendered[0]


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    import transformers
    from transformers import AutoTokenizer

    tokenizers = {t["name"]: AutoTokenizer.from_pretrained(t["dir"]) for t in spec["templates"] if "dir" in t}
    results = {}
    for template in spec["templates"]:
        out = results[template["name"]] = {}
        for conversation in spec["conversations"]:
            try:
                out[conversation["name"]] = {"text": render(template, conversation, tokenizers)}
            except Exception as error:  # the template's own raise_exception, or a render error
                out[conversation["name"]] = {"error": str(error), "errorType": type(error).__name__}
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump({"versions": {"transformers": transformers.__version__}, "results": results}, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
