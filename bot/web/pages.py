"""The upload page and the refusal pages: plain HTML, a few lines of JavaScript, readable on a phone."""

from __future__ import annotations

from html import escape

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem;line-height:1.5}"
    "button,input{font-size:1.1rem;margin:.5rem 0;max-width:100%}progress{width:100%;height:1.4rem}"
    ".bad{color:#a00}.good{color:#070}"
)

# XHR rather than fetch(): only XHR reports upload progress. The zip is the raw PUT body (no multipart).
_SCRIPT = """
const form = document.getElementById('upload-form');
form.addEventListener('submit', (event) => {
  event.preventDefault();
  const file = document.getElementById('file').files[0];
  const status = document.getElementById('status');
  const bar = document.getElementById('progress');
  if (!file) { status.textContent = 'Choose a .zip file first.'; return; }
  const xhr = new XMLHttpRequest();
  xhr.open('PUT', window.location.href);
  xhr.setRequestHeader('Content-Type', 'application/zip');
  xhr.upload.onprogress = (e) => {
    if (e.lengthComputable) {
      bar.value = e.loaded / e.total;
      status.textContent = 'Uploading: ' + (e.loaded / 1e6).toFixed(1) + ' of ' + (e.total / 1e6).toFixed(1) + ' MB';
    }
  };
  xhr.upload.onload = () => { status.textContent = 'Checking the dataset…'; };
  xhr.onload = () => {
    status.className = xhr.status === 200 ? 'good' : 'bad';
    status.textContent = xhr.responseText;
    document.getElementById('send').disabled = xhr.status === 200;
  };
  xhr.onerror = () => { status.className = 'bad'; status.textContent = 'The upload failed (connection lost).'; };
  document.getElementById('send').disabled = true;
  xhr.send(file);
  xhr.onloadend = () => { if (xhr.status !== 200) document.getElementById('send').disabled = false; };
});
"""


def upload_page(max_bytes: int, expires_at_text: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>lorabot: upload a dataset</title><style>{_STYLE}</style></head>
<body><h1>Upload a dataset</h1>
<p>A .zip of images (JPEG, PNG or WEBP) with a caption .txt next to each, in one folder or in
<code>10_name</code> folders. Up to {max_bytes / 1e6:.0f} MB. This link works once, until {escape(expires_at_text)}.</p>
<form id="upload-form"><input type="file" id="file" accept=".zip,application/zip"><br>
<button type="submit" id="send">Upload</button></form>
<progress id="progress" max="1" value="0"></progress>
<p id="status" role="status" aria-live="polite"></p>
<script>{_SCRIPT}</script>
</body></html>
"""


def refusal_page(title: str, message: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>lorabot: {escape(title)}</title><style>{_STYLE}</style></head>
<body><h1 class="bad">{escape(title)}</h1><p id="reason">{escape(message)}</p></body></html>
"""
