"""Writes the document fixtures of tests/test_documents.py (run once; the files are committed).

Needs reportlab, python-docx and python-pptx (dev tools, not runtime dependencies):
    PYTHONPATH=. .venv/bin/python tests/data/docs/make_docs.py
The facts in these files are made up; QUESTIONS says on which page or under which heading each answer is.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

FERRY_PAGES = [
    (
        "1 Introduction",
        [
            "This manual describes how the Tidewater Ferry Company runs its three vessels between Port Alder, "
            "Gull Island and Heron Point. It is written for deck crew, engineers and ticket office staff.",
            "The company was founded in 1987 by the harbour cooperative. Its head office is on Quay Street in "
            "Port Alder, next to the lifeboat station.",
        ],
        None,
    ),
    (
        "2 Timetable",
        [
            "Sailings run every day except Christmas Day. In winter the last sailing leaves one hour earlier.",
            "The summer timetable for the main routes is shown below.",
        ],
        [
            ["Route", "Departs", "Arrives", "Vessel"],
            ["Port Alder to Gull Island", "06:40", "07:25", "MV Kittiwake"],
            ["Gull Island to Heron Point", "08:10", "08:55", "MV Kittiwake"],
            ["Port Alder to Heron Point", "09:30", "10:35", "MV Shearwater"],
        ],
    ),
    (
        "3 Safety",
        [
            "Every vessel carries one lifejacket for each passenger plus ten percent spare, stored in the orange "
            "lockers on the upper deck. Muster stations are marked with green signs at the bow and the stern.",
            "A man-overboard drill is held every Tuesday morning before the first sailing. The master records "
            "each drill in the deck log.",
        ],
        None,
    ),
    (
        "4 Maintenance",
        [
            "The main engines have their oil and filters changed every 250 running hours. The engineer on watch "
            "logs engine hours at the end of each day.",
            "Hulls are lifted out of the water for inspection and antifouling every February, one vessel at a "
            "time, at the Heron Point slipway.",
        ],
        None,
    ),
    (
        "5 Fares",
        [
            "Tickets are sold at the Quay Street office and on board. Children under five travel free.",
        ],
        [
            ["Ticket", "Single", "Return"],
            ["Adult", "6.50", "11.00"],
            ["Child", "3.20", "5.50"],
            ["Bicycle", "1.50", "2.50"],
        ],
    ),
]

# (question, file, page or heading path that holds the answer)
QUESTIONS = [
    ("Which islands and harbours does the Tidewater ferry serve?", "ferry_manual.pdf", 1),
    ("Where is the ferry company's head office?", "ferry_manual.pdf", 1),
    ("What time does the first ferry from Port Alder to Gull Island leave?", "ferry_manual.pdf", 2),
    ("Which vessel sails from Port Alder to Heron Point?", "ferry_manual.pdf", 2),
    ("Where are the lifejackets stored on the ferry?", "ferry_manual.pdf", 3),
    ("When is the man-overboard drill held?", "ferry_manual.pdf", 3),
    ("How often are the ferry engine oil and filters changed?", "ferry_manual.pdf", 4),
    ("When are the ferry hulls inspected and antifouled?", "ferry_manual.pdf", 4),
    ("How much is an adult return ticket on the ferry?", "ferry_manual.pdf", 5),
    ("Do small children pay for the ferry?", "ferry_manual.pdf", 5),
    ("How much is the yearly garden club membership fee?", "garden_handbook.docx", "Garden club handbook > Membership"),
    ("When may members water their plots?", "garden_handbook.docx", "Garden club handbook > Plots > Watering"),
    ("What may not go in the compost bins?", "garden_handbook.docx", "Garden club handbook > Composting"),
    ("Where is the key to the tool shed kept?", "garden_handbook.docx", "Garden club handbook > Tool shed"),
    ("How often should I feed my sourdough starter?", "sourdough.html", "Keeping a sourdough starter > Feeding"),
    ("Why does my sourdough starter smell of nail polish?", "sourdough.html", "Keeping a sourdough starter > Problems"),
    ("How did sales do in the third quarter?", "quarterly_review.pptx", 2),
    ("What are next year's priorities?", "quarterly_review.pptx", 3),
]


def ferry_pdf(path: Path) -> None:
    """A five-page PDF with numbered headings, prose and two tables, one section a page."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    styles = getSampleStyleSheet()
    story: list = [Paragraph("Tidewater Ferry Operations Manual", styles["Title"])]
    for i, (heading, paras, table) in enumerate(FERRY_PAGES):
        if i:
            story.append(PageBreak())
        story.append(Paragraph(heading, styles["Heading1"]))
        story.extend(Paragraph(p, styles["BodyText"]) for p in paras)
        if table:
            story.append(Spacer(1, 12))
            t = Table(table)
            t.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.5, colors.grey)]))
            story.append(t)
    SimpleDocTemplate(str(path), pagesize=A4, title="Tidewater Ferry Operations Manual").build(story)


def scanned_pdf(path: Path) -> None:
    """A PDF whose one page is only drawn shapes: what a scan without OCR looks like to a text extractor."""
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path))
    for y in range(100, 700, 30):
        c.rect(72, y, 400, 12, fill=1)
    c.showPage()
    c.save()


def half_scanned_pdf(path: Path) -> None:
    """Page 1 has text, page 2 only drawn shapes (a scanned page), page 3 is empty."""
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path))
    c.drawString(72, 720, "The first page of this letter has a text layer.")
    c.showPage()
    c.rect(72, 400, 400, 12, fill=1)
    c.showPage()
    c.showPage()
    c.save()


def locked_pdf(path: Path) -> None:
    """A PDF that opens only with a password."""
    from reportlab.lib import pdfencrypt
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), encrypt=pdfencrypt.StandardEncryption("secret", canPrint=0))
    c.drawString(72, 720, "Nothing to see without the password.")
    c.showPage()
    c.save()


def garden_docx(path: Path) -> None:
    """A DOCX with nested headings, bulleted and numbered lists."""
    import docx

    d = docx.Document()
    d.add_heading("Garden club handbook", 1)
    d.add_paragraph("The Willow Lane garden club looks after forty allotment plots behind the old railway station.")
    d.add_heading("Membership", 2)
    d.add_paragraph("Membership costs 35 pounds a year, paid each March to the treasurer.")
    for item in ("Members get one plot each.", "Members must attend two work days a year."):
        d.add_paragraph(item, style="List Bullet")
    d.add_heading("Plots", 2)
    d.add_paragraph(
        "Plots are numbered from the gate. "
        "A plot left untended for three months is offered to the next person on the waiting list."
    )
    d.add_heading("Watering", 3)
    d.add_paragraph("Hoses may be used only before 9 in the morning or after 6 in the evening.")
    d.add_paragraph("In a hosepipe ban, use the water butts only.", style="List Number")
    d.add_paragraph("Close the mains tap at the gate after use.", style="List Number")
    d.add_heading("Composting", 2)
    d.add_paragraph(
        "The three compost bays are turned monthly. "
        "Do not put meat, cooked food or diseased plants in the compost bins."
    )
    d.add_heading("Tool shed", 2)
    d.add_paragraph(
        "The tool shed key hangs in the key safe by the gate; the code is given to members by text message."
    )
    d.save(str(path))


SOURDOUGH_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Keeping a sourdough starter | Crumb & Co blog</title>
<style>body { font-family: serif }</style><script>window.analytics = {track() {}};</script></head>
<body>
<header class="site"><a href="/">Crumb &amp; Co</a><p>Bread, mostly.</p></header>
<nav><ul><li><a href="/">Home</a></li><li><a href="/recipes">Recipes</a></li><li><a href="/about">About</a></li>
<li><a href="/subscribe">Subscribe to our newsletter</a></li></ul></nav>
<div class="layout">
<main>
<article>
<header><h1>Keeping a sourdough starter</h1><p class="byline">Posted in Baking basics</p></header>
<p>A starter is flour and water that wild yeast and bacteria have made their home.</p>
<h2>Feeding</h2>
<p>Feed the starter once a day at room temperature: discard all but 50 grams, then add 50 grams of flour and
50 grams of water. Kept in the fridge, it needs feeding only once a week.</p>
<h2>Problems</h2>
<p>A smell of nail polish (acetone) means the starter is hungry: feed it twice a day for a few days.
Grey liquid on top is called hooch; pour it off or stir it back in.</p>
</article>
</main>
<aside><h3>Popular posts</h3><ul><li><a href="/p/1">Ten best bread knives</a></li></ul>
<p>Advertisement: buy our premium flour bundle today!</p></aside>
</div>
<footer><p>Copyright 2026 Crumb &amp; Co. All rights reserved.</p><a href="/privacy">Privacy policy</a></footer>
</body></html>
"""


def review_pptx(path: Path) -> None:
    """A three-slide deck with titles and bullet points."""
    import pptx

    deck = pptx.Presentation()
    slides = [
        ("Quarterly review", ["Harbour Books, third quarter"]),
        ("Sales", ["Sales rose 12 percent in the third quarter", "Online orders were a third of all sales"]),
        ("Next year", ["Open a second shop in Heron Point", "Start a children's reading club"]),
    ]
    for title, bullets in slides:
        s = deck.slides.add_slide(deck.slide_layouts[1])
        s.shapes.title.text = title
        body = s.placeholders[1].text_frame
        body.text = bullets[0]
        for b in bullets[1:]:
            body.add_paragraph().text = b
    deck.save(str(path))


def main(out: Path = HERE) -> None:
    """Write every fixture into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    ferry_pdf(out / "ferry_manual.pdf")
    scanned_pdf(out / "scanned.pdf")
    locked_pdf(out / "locked.pdf")
    half_scanned_pdf(out / "half_scanned.pdf")
    garden_docx(out / "garden_handbook.docx")
    (out / "sourdough.html").write_text(SOURDOUGH_HTML, encoding="utf-8")
    review_pptx(out / "quarterly_review.pptx")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
