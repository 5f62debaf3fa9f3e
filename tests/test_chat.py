"""Instruct models: questions go through the tokenizer's chat template, the position rules find the end of the
templated prompt, instructions land inside the user turn, and a model loaded with a template has its own cache keys."""

from __future__ import annotations

import pytest
from conftest import save_tiny_gemma3

from workbench.prompting import ChatFormat, ChatTemplateError, QAFormat, prompt_format, qa_context, qa_prompt

GEMMA_TEMPLATE = ("{{ bos_token }}{% for message in messages %}<start_of_turn>{{ message['role'] }}\n"
                  "{{ message['content'] }}<end_of_turn>\n{% endfor %}"
                  "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
"""Gemma's instruct template, reduced to the user/model turns."""


@pytest.fixture(scope="module")
def chat_checkpoint(tmp_path_factory):
    """A tiny Gemma 3 checkpoint whose tokenizer (the embedded model's) carries a chat template, and one without."""
    return (save_tiny_gemma3(tmp_path_factory.mktemp("base")),
            save_tiny_gemma3(tmp_path_factory.mktemp("chat"), GEMMA_TEMPLATE))


def test_the_chat_format_wraps_one_user_turn_without_a_second_bos(chat_checkpoint):
    from workbench.models import load_tokenizer

    tokenizer = load_tokenizer(chat_checkpoint[1])
    chat = ChatFormat.from_tokenizer(tokenizer)
    assert chat.prompt("What is a cell?") == "<start_of_turn>user\nWhat is a cell?<end_of_turn>\n<start_of_turn>model\n"
    ids = tokenizer(chat.prompt("What is a cell?"))["input_ids"]
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id
    # a tokenizer that does not add BOS keeps the template's; one that always prepends it (TransformerLens' hooked
    # models do, whatever the HF tokenizer does) drops it
    assert ChatFormat.from_tokenizer(tokenizer, adds_bos=False).prefix == "<bos><start_of_turn>user\n"
    assert ChatFormat.from_tokenizer(tokenizer, adds_bos=True) == chat
    instructed = chat.with_instruction(chat.prompt("What is a cell?"), "Answer in Hindi.")
    assert instructed == chat.prompt("What is a cell? Answer in Hindi.")  # inside the user turn
    assert QAFormat().with_instruction("Q: What is a cell?\nA:", "Answer in Hindi.") == (
        "Q: What is a cell? Answer in Hindi.\nA:")
    assert chat.with_instruction("What is a cell?", "Answer in Hindi.") == "What is a cell? Answer in Hindi."  # --raw


def test_a_model_loaded_with_its_chat_template_prompts_through_it(chat_checkpoint):
    from workbench.generation import generate_recording
    from workbench.interventions import declared_prompt_ends
    from workbench.models import load_model, model_key, model_metadata

    base_dir, chat_dir = chat_checkpoint
    plain = load_model(chat_dir, backend="hf")
    chat = load_model(chat_dir, backend="hf", chat_template=True)
    assert prompt_format(plain) == QAFormat() and qa_prompt(plain, "Hi?") == "Q: Hi?\nA:"
    assert qa_prompt(chat, "Hi?").endswith("<start_of_turn>model\n")
    assert qa_context(chat, "Hi?", "Namaste") == (qa_prompt(chat, "Hi?"), "Namaste")
    assert model_metadata(chat)["prompt_format"].startswith("chat:") and model_metadata(plain)["prompt_format"] == "qa"
    assert model_key(chat) != model_key(plain)

    seen: list[tuple[int, list[int]]] = []

    def record(activation, hook):
        if activation.shape[1] > 1:  # the prompt's forward, before the cached steps
            seen.append((activation.shape[1], declared_prompt_ends().tolist()))
        return activation

    prompts = [qa_prompt(chat, "What is a cell?"), qa_prompt(chat, "Why?")]
    generate_recording(chat, prompts, hooks=[("blocks.0.hook_resid_pre", record)], max_new_tokens=2, batch_size=2)
    (width, ends), = seen
    encoded = chat.tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")["input_ids"]
    assert ends == [width - 1]
    suffix_end = chat.tokenizer(prompt_format(chat).suffix, add_special_tokens=False)["input_ids"][-1]
    assert encoded[:, width - 1].tolist() == [suffix_end, suffix_end]  # the rule's "final" is the template's end

    with pytest.raises(ChatTemplateError, match="has no chat template"):
        load_model(base_dir, backend="hf", chat_template=True)


def test_chat_template_on_the_command_line_fails_before_loading_for_a_base_tokenizer(chat_checkpoint, capsys,
                                                                                        monkeypatch):
    from workbench.cli import main

    monkeypatch.setattr("sys.argv", ["workbench", "steer", "--target", "hi", "--prompt", "Hi", "--model",
                                     str(chat_checkpoint[0]), "--chat-template", "--layer", "1", "--strength", "1"])
    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == 2
    assert "has no chat template" in capsys.readouterr().err
