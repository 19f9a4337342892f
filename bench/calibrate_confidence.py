"""Refit the metacognition weights: retrieval features of on-corpus and off-corpus questions against an
ingested seed corpus, a logistic fit, and the confidences the shipped weights give.

    python bench/calibrate_confidence.py [DATA_DIR]
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np

from index.retrieve import query_vector
from rag import Shvayambhu
from rag.consciousness.metacognition import evidence, retrieval_confidence

ON_CORPUS = (
    "Why does the sky look blue?",
    "What makes sunsets red?",
    "How do black holes form and what are they?",
    "How long is a light year?",
    "How does carbon dating work?",
    "How do I get to sleep more quickly?",
    "What's the right length for a power nap?",
    "How big should my emergency savings be?",
    "Is the Pomodoro method effective?",
    "How should a beginner start working out?",
    "How can I spot a phishing email?",
    "What does an API do, in simple words?",
    "What is overfitting?",
    "What's the trolley problem about?",
    "What are the problems with utilitarianism?",
    "Is it OK to use AI to write my essays?",
    "affect vs effect: which one is which?",
    "Should I use a serial comma?",
    "How does memory work in the brain?",
    "Why do people forget things?",
    "Does sleeping help memory?",
    "Explain the Monty Hall problem.",
    "What is confirmation bias?",
    "What's the answer to the bat and ball puzzle?",
    "How do I deal with grief?",
    "How can I support a depressed friend?",
    "Empathy versus sympathy: what's the difference?",
    "How do I calm down when angry?",
    "Are you able to browse the web?",
    "Do you have emotions?",
    "What is retrieval augmented generation?",
    "How does the internet work?",
    "Why does having many tabs open slow my computer?",
    "How does photosynthesis work?",
    "Why do volcanoes erupt?",
    "How do I overcome writer's block?",
    "What is a villanelle poem?",
)
OFF_CORPUS = (
    "What is the torque spec for the cylinder head bolts on a 2004 Honda Civic?",
    "Who won the 1986 FIFA World Cup final and what was the score?",
    "What's the current exchange rate of the Thai baht to the euro?",
    "How many calories are in a McDonald's Big Mac?",
    "What is the population of Ulaanbaatar?",
    "How do I configure BGP route reflectors on a Juniper router?",
    "Give me the lyrics to Bohemian Rhapsody.",
    "What is the melting point of tungsten carbide?",
    "Which cricket team won the 2011 World Cup?",
    "How do I file a VAT return in Portugal?",
    "What is the chemical formula of ibuprofen?",
    "What time does the Louvre close on Fridays?",
    "How do I remove a stripped screw from a bicycle disc brake rotor?",
    "What were the main causes of the War of the Spanish Succession?",
    "Translate 'the cat sleeps on the mat' into Swahili.",
    "What's the best bait for catching catfish in the Mississippi river?",
    "How do I compile the Linux kernel with a custom config?",
    "Who was the third Mughal emperor?",
    "What is the dosage of amoxicillin for a 20 kg child?",
    "How tall is Mount Kilimanjaro?",
    "What is the recipe for authentic Hungarian goulash?",
    "What's the plot of the opera Tosca?",
    "Which stocks are in the Nikkei 225?",
    "How do I replace the water pump on a Volvo XC90?",
    "What is the capital of Burkina Faso?",
    "Explain bidding conventions in contract bridge.",
    "What's the zoning law for accessory dwelling units in Austin, Texas?",
    "How do I knit a cable stitch?",
)


def fit(features: np.ndarray, labels: np.ndarray, l2: float = 0.001, steps: int = 20000) -> np.ndarray:
    """Logistic regression by gradient descent: returns [bias, w_top, w_margin, w_agree]."""
    x = np.hstack([np.ones((len(features), 1)), features])
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(x @ w)))
        grad = x.T @ (p - labels) / len(labels) + l2 * np.r_[0.0, w[1:]]
        w -= 1.0 * grad
    return w


def calibrate(collection: Any, embedder: Any, k: int = 4) -> dict[str, Any]:
    """Features of ON_CORPUS and OFF_CORPUS questions against `collection`, the fitted weights, and the
    confidences the shipped weights give (mean on, mean off, and the worst pair)."""
    rows, labels, confs = [], [], {"on": [], "off": []}
    for label, questions in (("on", ON_CORPUS), ("off", OFF_CORPUS)):
        vecs = embedder.embed(list(questions))
        for v in vecs:
            hits = query_vector(collection, v, k=k, mmr=True, fetch_k=k, mmr_lambda=1.0)
            ev = evidence([h.score for h in hits], [h.embedding for h in hits])
            rows.append([ev.top, ev.margin, ev.agreement])
            labels.append(1.0 if label == "on" else 0.0)
            confs[label].append(retrieval_confidence(ev))
    w = fit(np.array(rows), np.array(labels))
    return {
        "fitted": {"bias": float(w[0]), "top": float(w[1]), "margin": float(w[2]), "agreement": float(w[3])},
        "on_mean": float(np.mean(confs["on"])),
        "off_mean": float(np.mean(confs["off"])),
        "on_min": float(np.min(confs["on"])),
        "off_max": float(np.max(confs["off"])),
    }


if __name__ == "__main__":
    a = Shvayambhu(store={"data_dir": sys.argv[1]} if len(sys.argv) > 1 else {})
    print(json.dumps(calibrate(a.collection(), a.embedder), indent=2))
