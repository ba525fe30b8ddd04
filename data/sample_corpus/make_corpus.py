"""Rebuild the sample corpus from the Python 3.11 tutorial sources shipped by Debian's python3.11-doc package.

Not part of the ragtune package: it documents (and reproduces) how the committed files were made.

    apt-get install -y python3.11-doc pandoc      # tutorial sources + rst -> markdown/html conversion
    python -m venv /tmp/corpusvenv && /tmp/corpusvenv/bin/pip install reportlab==5.1.0
    /tmp/corpusvenv/bin/python data/sample_corpus/make_corpus.py

Output (next to this script):
    python_tutorial_modules_errors.pdf  chapters "Modules" and "Errors and Exceptions", typeset with reportlab:
                                        real headings (larger bold type + PDF outline), several pages
    standard_library_tour.md            chapter "Brief Tour of the Standard Library" (pandoc rst -> gfm)
    virtual_environments.html           chapter "Virtual Environments and Packages" (pandoc rst -> html5)
"""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

SOURCES = Path("/usr/share/doc/python3.11/html/_sources/tutorial")
HERE = Path(__file__).resolve().parent


def sphinx_to_plain_rst(text: str) -> str:
    """Turn Sphinx-only markup into plain reStructuredText that pandoc reads."""
    text = re.sub(r"^\.\. (index|_[\w-]+)::?.*(\n[ \t]+.*)*\n", "", text, flags=re.M)  # index entries, labels
    text = re.sub(r"^\.\. _[\w-]+:\s*\n", "", text, flags=re.M)
    text = re.sub(r"^\.\. rubric:: Footnotes\s*\n", "", text, flags=re.M)
    text = re.sub(r"^\.\. (code-block|highlight)::.*$", "::", text, flags=re.M)
    text = re.sub(r":ref:`([^`<]+?)\s*<[^`>]+>`", r"\1", text)  # :ref:`Text <target>` -> Text
    text = re.sub(r":ref:`([^`]+)`", lambda m: m.group(1).replace("tut-", "").replace("-", " "), text)
    text = re.sub(r":rfc:`(\d+)`", r"RFC \1", text)
    text = re.sub(r":term:`([^`<]+?)\s*<[^`>]+>`", r"\1", text)
    text = re.sub(r":term:`([^`]+)`", r"\1", text)
    text = re.sub(r":[a-z]+:`[!~]?([^`]+)`", r"``\1``", text)  # :exc:`~x.Y` -> ``x.Y``
    return text


def pandoc(rst: str, to: str, *extra: str) -> str:
    return subprocess.run(
        ["pandoc", "-f", "rst", "-t", to, "--wrap=none", *extra],
        input=rst, capture_output=True, text=True, check=True,
    ).stdout


def chapter(name: str) -> str:
    return sphinx_to_plain_rst((SOURCES / f"{name}.rst.txt").read_text(encoding="utf-8"))


_EMPHASIS = [
    (re.compile(r"\*\*([^*]+)\*\*"), r"<b>\1</b>"),
    (re.compile(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])"), r"<i>\1</i>"),
    (re.compile(r"\[([^\]]+)\]\([^)]+\)"), r"\1"),
]


def inline(md: str) -> str:
    """Markdown inline markup -> reportlab's mini-HTML; code spans are kept verbatim."""
    parts = re.split(r"(`[^`]+`)", md)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append('<font face="Courier">' + html.escape(part[1:-1], quote=False) + "</font>")
            continue
        text = html.escape(part, quote=False).replace("\\", "")
        for pattern, repl in _EMPHASIS:
            text = pattern.sub(repl, text)
        out.append(text)
    return "".join(out)


def markdown_to_pdf(markdown: str, title: str, out: Path) -> None:
    """Typeset simple GitHub-flavoured Markdown (headings, paragraphs, lists, code) with reportlab."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
    from reportlab.lib.units import cm
    from reportlab.platypus import BaseDocTemplate, Frame, PageTemplate, Paragraph, Preformatted, Spacer

    styles = getSampleStyleSheet()
    body = ParagraphStyle("body", parent=styles["BodyText"], fontSize=10.5, leading=14, spaceAfter=6)
    bullet = ParagraphStyle("bullet", parent=body, leftIndent=14, bulletIndent=4)
    code = ParagraphStyle("code", parent=styles["Code"], fontSize=8.5, leading=10.5, leftIndent=10,
                          spaceBefore=2, spaceAfter=8)
    heads = {1: styles["Heading1"], 2: styles["Heading2"], 3: styles["Heading3"]}

    class Doc(BaseDocTemplate):
        def afterFlowable(self, flowable):  # noqa: N802 - reportlab hook name
            level = getattr(flowable, "_outline_level", None)
            if level is not None:
                text = flowable.getPlainText()
                key = f"h{id(flowable)}"
                self.canv.bookmarkPage(key)
                self.canv.addOutlineEntry(text, key, level=level - 1)

    def footer(canvas, doc):
        canvas.setFont("Helvetica", 8)
        canvas.drawRightString(A4[0] - 2 * cm, 1.2 * cm, f"{doc.page}")

    doc = Doc(str(out), pagesize=A4, title=title, author="Python Software Foundation",
              leftMargin=2.2 * cm, rightMargin=2.2 * cm, topMargin=2 * cm, bottomMargin=2 * cm)
    doc.addPageTemplates([PageTemplate("p", [Frame(doc.leftMargin, doc.bottomMargin, doc.width, doc.height)],
                                       onPage=footer)])
    story = []
    lines = markdown.splitlines()
    i = 0
    para: list[str] = []

    def flush():
        if para:
            story.append(Paragraph(inline(" ".join(para)), body))
            para.clear()

    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            flush()
            block = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                block.append(lines[i])
                i += 1
            story.append(Preformatted("\n".join(block), code))
        elif line.startswith("    ") and not para:
            block = []
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                block.append(lines[i][4:])
                i += 1
            i -= 1
            story.append(Preformatted("\n".join(block).rstrip("\n"), code))
        elif m := re.match(r"^(#{1,3}) (.*)", line):
            flush()
            level = len(m.group(1))
            p = Paragraph(inline(m.group(2)), heads[level])
            p._outline_level = level
            story.append(p)
        elif m := re.match(r"^\s*(?:[-*]|\d+\.)\s+(.*)", line):
            flush()
            item = [m.group(1)]
            while i + 1 < len(lines) and lines[i + 1].startswith("  ") and lines[i + 1].strip():
                i += 1
                item.append(lines[i].strip())
            story.append(Paragraph(inline(" ".join(item)), bullet, bulletText="•"))
        elif line.startswith("<div") or line.startswith("</div"):
            flush()
        elif line.strip().startswith(">"):
            para.append(line.strip().lstrip(">").strip())
        elif not line.strip():
            flush()
        else:
            para.append(line.strip())
        i += 1
    flush()
    story.append(Spacer(1, 12))
    doc.build(story)


def main() -> int:
    if not SOURCES.is_dir():
        print(f"missing {SOURCES}: apt-get install python3.11-doc", file=sys.stderr)
        return 1
    pdf_md = pandoc(chapter("modules"), "gfm") + "\n\n" + pandoc(chapter("errors"), "gfm")
    markdown_to_pdf(pdf_md, "Python Tutorial: Modules, Errors and Exceptions", HERE / "python_tutorial_modules_errors.pdf")
    (HERE / "standard_library_tour.md").write_text(pandoc(chapter("stdlib"), "gfm"), encoding="utf-8")
    page = pandoc(chapter("venv"), "html5", "--standalone", "--metadata", "title=Virtual Environments and Packages")
    (HERE / "virtual_environments.html").write_text(page, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
