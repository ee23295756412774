"""Self-contained HTML pages: tables and matplotlib figures embedded as PNG data URIs."""

import base64
import html
import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display in a pipeline task

import matplotlib.pyplot as plt

STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328;
       max-width: 1100px; margin: 24px auto; padding: 0 16px; }
h1 { font-size: 26px; margin-bottom: 8px; }
h2 { font-size: 20px; margin-top: 32px; border-bottom: 1px solid #d0d7de; }
h3 { font-size: 16px; margin-top: 24px; }
.headline { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 8px;
            padding: 8px 20px 12px; }
.lead { font-size: 17px; }
.note { color: #57606a; font-size: 13px; }
.warning { color: #9a3412; background: #fff7ed; border-left: 3px solid #ea580c;
  padding: 6px 10px; }
table { border-collapse: collapse; margin: 8px 0; font-variant-numeric: tabular-nums; }
th { background: #eaeef2; }
td, th { border: 1px solid #d0d7de; padding: 4px 10px; text-align: left; }
tbody tr:nth-child(even) { background: #f6f8fa; }
img { max-width: 100%; margin: 12px 0; }
"""


def figure_html(figure: plt.Figure, alt: str) -> str:
    """Embed a figure as a PNG data URI and close it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def table_html(header: list[str], rows: list[list[Any]]) -> str:
    """A plain HTML table; floats shown with 4 decimals."""

    def cell(value: Any) -> str:
        if value is None:
            return ""
        return f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# Where KFP mounts an artifact store in a task's pod, and the store's own URI scheme.
KFP_MOUNTS = {"/gcs/": "gs://", "/s3/": "s3://", "/minio/": "minio://"}


def artifact_link(path: Path, text: str) -> str:
    """A link to a file that a pipeline task read, reachable from wherever the page is read.

    Locally a file:// link; in a KFP pod the file sits on the artifact store's mount, so
    the link is the Cloud Storage console's for gs://, and the object's URI, as text, for
    S3 and MinIO (which have no browser URL of their own).
    """
    path = Path(path).resolve()
    for mount, scheme in KFP_MOUNTS.items():
        if str(path).startswith(mount):
            rest = str(path)[len(mount) :]
            if scheme == "gs://":
                url = f"https://storage.cloud.google.com/{rest}"
                return f'<a href="{html.escape(url)}">{html.escape(text)}</a>'
            return f"{html.escape(text)} (<code>{html.escape(scheme + rest)}</code>)"
    return f'<a href="{html.escape(path.as_uri())}">{html.escape(text)}</a>'


def html_page(title: str, sections: list[str]) -> str:
    """A whole page from HTML fragments."""
    body = "\n".join(sections)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>\n{body}\n</body></html>\n"
    )
