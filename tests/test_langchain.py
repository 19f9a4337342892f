"""LangChain interfaces: the retriever, our prompt template, a backend as a Runnable, the ask path as a
Runnable, composed with plain LCEL against the fake Ollama server."""

from __future__ import annotations

from langchain_core.output_parsers import StrOutputParser
from langchain_core.runnables import RunnablePassthrough

from rag.answer import Answer
from rag.langchain import BackendChat, ShvayambhuRetriever, ask_runnable, format_documents, lcel_prompt


def test_retriever_documents_carry_ids_and_scores(make_assistant):
    a = make_assistant()
    docs = ShvayambhuRetriever(assistant=a, k=3).invoke("Why is the sky blue?")
    assert len(docs) == 3
    hits = a.search("Why is the sky blue?", 3)
    assert [d.id for d in docs] == [d.metadata["id"] for d in docs] == [h.id for h in hits]
    scores = [d.metadata["score"] for d in docs]
    assert scores == sorted(scores, reverse=True) and 0 < scores[-1] <= scores[0] <= 1
    assert docs[0].metadata["prompt"] == "Why is the sky blue during the day?"
    assert "Rayleigh" in docs[0].page_content and docs[0].metadata["category"] == "science"


def test_lcel_retriever_prompt_backend(make_assistant, fake_ollama):
    fake_ollama.behavior("llama3.2").reply = "Because of Rayleigh scattering [1]."
    a = make_assistant()
    retriever = ShvayambhuRetriever(assistant=a, k=2)
    chain = (
        {"workspace": retriever | format_documents, "question": RunnablePassthrough()}
        | lcel_prompt(a.settings)
        | BackendChat(a.backend())
        | StrOutputParser()
    )
    assert chain.invoke("Why is the sky blue?") == "Because of Rayleigh scattering [1]."
    sent = fake_ollama.bodies("/api/chat")[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user"]
    assert sent[0]["content"].startswith("You are Shvayambhu")
    assert "Why is the sky blue during the day?" not in sent[0]["content"]  # retrieved text is never a system message
    assert sent[1]["content"].startswith('<reference>\n<exemplar n="1">\nQ: Why is the sky blue during the day?')
    assert sent[1]["content"].endswith("</reference>\n\nWhy is the sky blue?")
    assert "".join(chain.stream("Why is the sky blue?")) == "Because of Rayleigh scattering [1]."


def test_ask_path_as_runnable(make_assistant, fake_ollama):
    a = make_assistant()
    r = ask_runnable(a, use_memory=False)
    text = r.invoke("How does photosynthesis work?")
    assert isinstance(text, str) and text
    pieces = list(r.stream("How does photosynthesis work?"))
    assert len(pieces) > 1 and "".join(pieces) == text
    out = r.batch(["How does photosynthesis work?", {"question": "Why do volcanoes erupt?", "k": 2}])
    assert out[0] == text and out[1]
    full = ask_runnable(a, output="answer").invoke({"question": "Why do volcanoes erupt?", "session": "lc"})
    assert isinstance(full, Answer) and full.sources and full.session == "lc"
    assert (RunnablePassthrough() | r | StrOutputParser()).invoke("How does photosynthesis work?") == text


def test_one_chat_model_class_drives_ollama(make_assistant, fake_ollama):
    from rag.langchain import ShvayambhuChatModel

    fake_ollama.behavior("llama3.2").reply = "Hello from the stand-in."
    llm = ShvayambhuChatModel(backend="ollama", settings=make_assistant().settings, temperature=0.0, max_tokens=32)
    assert llm.invoke("Say hello.").content == "Hello from the stand-in."
    assert "".join(c.content for c in llm.stream("Say hello.")) == "Hello from the stand-in."
    sent = fake_ollama.bodies("/api/chat")[-1]
    assert sent["options"]["temperature"] == 0.0 and sent["options"]["num_predict"] == 32
