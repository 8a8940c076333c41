"""The upload page and the refusal pages: plain HTML, a few lines of JavaScript, readable on a phone."""

from __future__ import annotations

import json
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


_EDITOR_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1rem auto;padding:0 .75rem;line-height:1.4;max-width:72rem}"
    "button,input,select{font-size:1rem;margin:.2rem 0;max-width:100%}"
    "fieldset{border:1px solid #ccc;margin:.5rem 0;padding:.4rem .6rem}"
    "#grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(10rem,1fr));gap:.6rem}"
    ".card{border:1px solid #ddd;border-radius:.4rem;padding:.4rem;margin:0}"
    ".card img{width:100%;height:auto;display:block}.card textarea{width:100%;box-sizing:border-box;font-size:.9rem}"
    ".card figcaption{font-size:.75rem;color:#555;word-break:break-all}.card.changed{border-color:#070}"
    ".bad{color:#a00}.good{color:#070}"
)

# Tags are the comma-separated parts of a caption (seed 002's form). Every bulk action edits the text areas only; the
# server sees the result when "Save as new dataset" sends the captions that differ from the dataset's.
_EDITOR_SCRIPT = """
const DATA = JSON.parse(document.getElementById('data').textContent);
const grid = document.getElementById('grid');
const status = document.getElementById('status');
const tagsOf = (text) => text.split(',').map((t) => t.trim()).filter((t) => t.length > 0);
const cards = DATA.items.map((item) => {
  const figure = document.createElement('figure');
  figure.className = 'card';
  figure.dataset.path = item.path;
  const img = document.createElement('img');
  img.loading = 'lazy';
  img.alt = item.path;
  img.src = DATA.thumb + '?' + DATA.query + '&t=' + DATA.token + '&i=' + item.i;
  const label = document.createElement('figcaption');
  label.textContent = item.path;
  const text = document.createElement('textarea');
  text.rows = 3;
  text.maxLength = DATA.max_chars;
  text.value = item.caption;
  text.setAttribute('aria-label', 'caption of ' + item.path);
  text.addEventListener('input', refresh);
  figure.append(img, label, text);
  grid.append(figure);
  return {item, figure, text};
});
function changed() { return cards.filter((c) => c.text.value.trim() !== c.item.caption); }
function refresh() {
  const tag = document.getElementById('filter-tag').value.trim();
  const mode = document.getElementById('filter-mode').value;
  let shown = 0;
  for (const c of cards) {
    const has = tag === '' || tagsOf(c.text.value).includes(tag);
    const visible = tag === '' || (mode === 'with' ? has : !has);
    c.figure.hidden = !visible;
    c.figure.classList.toggle('changed', c.text.value.trim() !== c.item.caption);
    if (visible) shown += 1;
  }
  document.getElementById('counts').textContent =
    shown + ' of ' + cards.length + ' images shown · ' + changed().length + ' changed';
}
function rewriteTags(edit) {
  for (const c of cards) {
    const before = tagsOf(c.text.value);
    const after = [];
    for (const t of edit(before)) { if (!after.includes(t)) after.push(t); }
    if (after.join(', ') !== before.join(', ')) c.text.value = after.join(', ');
  }
  refresh();
}
document.getElementById('filter-tag').addEventListener('input', refresh);
document.getElementById('filter-mode').addEventListener('change', refresh);
document.getElementById('remove').addEventListener('click', () => {
  const tag = document.getElementById('remove-tag').value.trim();
  if (tag) rewriteTags((tags) => tags.filter((t) => t !== tag));
});
document.getElementById('rename').addEventListener('click', () => {
  const from = document.getElementById('rename-from').value.trim();
  const to = document.getElementById('rename-to').value.trim();
  if (to.includes(',')) {
    status.className = 'bad';
    status.textContent = 'A tag cannot contain a comma: commas separate the tags.';
    return;
  }
  if (from && to) rewriteTags((tags) => tags.map((t) => (t === from ? to : t)));
});
document.getElementById('save').addEventListener('click', async () => {
  const edits = {};
  for (const c of changed()) edits[c.item.path] = c.text.value.trim();
  if (Object.keys(edits).length === 0) {
    status.className = 'bad';
    status.textContent = 'No caption was changed.';
    return;
  }
  const button = document.getElementById('save');
  button.disabled = true;
  status.className = '';
  status.textContent = 'Saving…';
  try {
    const response = await fetch(DATA.save + '?' + DATA.query + '&t=' + DATA.token, {
      method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify({captions: edits}),
    });
    const answer = await response.json();
    status.className = answer.ok ? 'good' : 'bad';
    status.textContent = answer.message;
    button.disabled = answer.ok;
  } catch (error) {
    status.className = 'bad';
    status.textContent = 'Saving failed (connection lost); try again.';
    button.disabled = false;
  }
});
refresh();
"""


def editor_page(
    *,
    items: list[dict[str, object]],
    query: str,
    token: str,
    sha256: str,
    expires_at_text: str,
    max_caption_chars: int,
) -> str:
    """The caption editor: a grid of thumbnails with editable captions, a tag filter, bulk remove / rename of a tag,
    and "Save as new dataset". The data travels as JSON in a non-executed script element (`<` escaped, so a caption
    cannot close it)."""
    from bot.web.editor import SAVE_PATH, THUMB_PATH

    data = {
        "items": items,
        "query": query,
        "token": token,
        "thumb": THUMB_PATH,
        "save": SAVE_PATH,
        "max_chars": max_caption_chars,
    }
    blob = json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>lorabot: edit captions</title><style>{_EDITOR_STYLE}</style></head>
<body><h1>Edit captions</h1>
<p>Dataset <code>{escape(sha256[:12])}</code> · {len(items)} images. Saving makes a <b>new</b> dataset
(a new hash); this one stays as it is. This page works until {escape(expires_at_text)} and saves once.</p>
<fieldset><legend>Show</legend>
<select id="filter-mode" aria-label="with or without"><option value="with">with</option>
<option value="without">without</option></select>
<input id="filter-tag" placeholder="a tag" aria-label="tag to filter by"> <span id="counts"></span></fieldset>
<fieldset><legend>Every image</legend>
<input id="remove-tag" placeholder="tag" aria-label="tag to remove">
<button id="remove" type="button">Remove tag</button><br>
<input id="rename-from" placeholder="tag" aria-label="tag to rename"> →
<input id="rename-to" placeholder="new tag" aria-label="new name"> <button id="rename" type="button">Rename tag</button>
</fieldset>
<p><button id="save" type="button">Save as new dataset</button></p>
<p id="status" role="status" aria-live="polite"></p>
<div id="grid"></div>
<script type="application/json" id="data">{blob}</script>
<script>{_EDITOR_SCRIPT}</script>
</body></html>
"""
