/* packages.js: the packages page (#/packages, #/packages/<name>): the tenant's packages by
 * name, each name's versions newest first in semantic-version order (GET
 * /api/v1/packages?name=, with its cursor), which is `latest` and where its channels point
 * (GET /api/v1/packages/{name}/channels); upload a version, move a channel and delete a
 * version (operator and admin) through the same REST API. The names come from GET
 * /api/v1/packages (creation order, with its cursor). No event is sent for packages: the page
 * reads again after its own actions, on the stream's `resync` and on Refresh, never on a
 * timer. */
import { html } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import { signal } from '@preact/signals';
import { api, ApiError, canOperate, onEvent, session, signOut } from './api.js';
import { bytes } from './agents.js';
import { localTime } from './jobs.js';

const NAMES_PAGE = 100; /* packages read to find names: a page of the plain list */
const VERSIONS_PAGE = 20; /* versions of one name shown at first ("More versions") */
const PARALLEL = 4; /* names read at once: a page of names stays within the rate's burst */
const SHORT_SHA = 12;

/* The names in the order their first version (of those read) was uploaded. */
const names = signal([]);
const cursor = signal(null);
/* name -> { versions, cursor, channels, loading, err, rowErr: { id: message } } */
const groups = signal(new Map());
const loading = signal(false);
const error = signal(null);
const readAt = signal(null);
let only = null; /* #/packages/<name>: that name alone */

function setGroup(name, patch) {
  const m = new Map(groups.value);
  m.set(name, { ...(m.get(name) || { versions: [], channels: [], cursor: null }), ...patch });
  groups.value = m;
}

const enc = encodeURIComponent;

/* One name's versions (newest first, as the API orders them) and its channels. */
async function loadName(name, more) {
  const g = groups.value.get(name);
  setGroup(name, { loading: true, err: null });
  try {
    const q = new URLSearchParams({ name, limit: String(VERSIONS_PAGE) });
    if (more && g && g.cursor) q.set('cursor', g.cursor);
    else if (!more && g && g.versions.length > VERSIONS_PAGE)
      q.set('limit', String(Math.min(500, g.versions.length))); /* keep what was shown */
    const channels = () => api('GET', `/api/v1/packages/${enc(name)}/channels`).catch((e) => {
      if (e.status === 404) return { items: [] }; /* no version left */
      throw e;
    });
    /* A name from the address may not exist (or be another tenant's): its channels, a 404,
     * are asked for only when it has versions. A listed name's are read at the same time. */
    let page;
    let ch = null;
    if (more) page = await api('GET', `/api/v1/packages?${q}`);
    else if (name === only) {
      page = await api('GET', `/api/v1/packages?${q}`);
      ch = page.items.length ? await channels() : { items: [] };
    } else [page, ch] = await Promise.all([api('GET', `/api/v1/packages?${q}`), channels()]);
    const cur = groups.value.get(name) || {};
    setGroup(name, {
      versions: more ? [...(cur.versions || []), ...page.items] : page.items,
      cursor: page.next_cursor || null,
      channels: ch ? ch.items : cur.channels || [],
      loading: false,
    });
  } catch (e) {
    setGroup(name, { loading: false, err: e.message });
  }
}

/* Runs fn over items, at most PARALLEL at a time. */
async function pooled(items, fn) {
  const queue = items.slice();
  const run = async () => {
    while (queue.length) await fn(queue.shift());
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL, queue.length) }, run));
}

async function load(more) {
  loading.value = true;
  error.value = null;
  try {
    let fresh;
    if (only) {
      names.value = [only];
      cursor.value = null;
      fresh = [only];
    } else {
      const q = new URLSearchParams({ limit: String(NAMES_PAGE) });
      if (more && cursor.value) q.set('cursor', cursor.value);
      const page = await api('GET', `/api/v1/packages?${q}`);
      const known = new Set(more ? names.value : []);
      fresh = [];
      for (const p of page.items)
        if (!known.has(p.name)) {
          known.add(p.name);
          fresh.push(p.name);
        }
      names.value = more ? [...names.value, ...fresh] : fresh;
      cursor.value = page.next_cursor || null;
      if (!more) {
        const keep = new Set(fresh);
        groups.value = new Map([...groups.value].filter(([n]) => keep.has(n)));
      }
    }
    await pooled(fresh, (n) => loadName(n, false));
    const g = only && groups.value.get(only);
    if (g && !g.err && !g.versions.length) names.value = []; /* none, or not this tenant's */
    readAt.value = new Date().toISOString();
  } catch (e) {
    error.value = e.message;
  } finally {
    loading.value = false;
  }
}

/* A version's pre-release part (SemVer: after the first '-' before any '+'). */
const isRelease = (v) => !v.split('+')[0].includes('-');

/* The content type the API takes for the file, from its name. */
export function contentTypeOf(file) {
  const n = file.name.toLowerCase();
  if (n.endsWith('.zip')) return 'application/zip';
  if (n.endsWith('.tar')) return 'application/x-tar';
  if (n.endsWith('.tar.gz') || n.endsWith('.tgz')) return 'application/gzip';
  return 'application/octet-stream';
}

async function sha256Hex(buf) {
  const d = new Uint8Array(await crypto.subtle.digest('SHA-256', buf));
  return Array.from(d, (b) => b.toString(16).padStart(2, '0')).join('');
}

/* Uploads one version: the file's bytes, their SHA-256 computed here (the API refuses a body
 * with another digest: a damaged upload), with the file's content type, through POST
 * /api/v1/packages?name=&version=[&entrypoint=]&sha256=. onProgress(sent, total) follows the
 * upload (XMLHttpRequest: fetch() cannot report it). Resolves to the package; rejects with an
 * ApiError (the API's problem, or status 0 when the connection failed). All of the upload
 * is here, so that another transfer (a chunked, resumable API) can replace it alone. */
export async function uploadPackage(file, { name, version, entrypoint }, onProgress) {
  const s = session.value;
  if (!s) throw new ApiError(401, { detail: 'not signed in' });
  const buf = await file.arrayBuffer();
  const q = new URLSearchParams({ name, version });
  if (entrypoint) q.set('entrypoint', entrypoint);
  q.set('sha256', await sha256Hex(buf));
  return new Promise((resolve, reject) => {
    const x = new XMLHttpRequest();
    x.open('POST', `/api/v1/packages?${q}`);
    x.setRequestHeader('Authorization', `Bearer ${s.token}`);
    x.setRequestHeader('Content-Type', contentTypeOf(file));
    x.upload.onprogress = (e) => onProgress && onProgress(e.loaded, e.total || buf.byteLength);
    x.onerror = () => reject(new ApiError(0, { detail: 'the upload did not complete: the ' +
      'connection closed (a network failure, or a file over the server\'s size limit)' }));
    x.onload = () => {
      let body = null;
      try {
        body = JSON.parse(x.responseText);
      } catch (e) {
        /* no JSON body */
      }
      if (x.status === 401 && session.value === s) signOut('expired');
      if (x.status >= 200 && x.status < 300) resolve(body);
      else reject(new ApiError(x.status, body));
    };
    x.send(buf);
  });
}

/* Where the upload form shows an error: the field the problem names, the file otherwise
 * (a digest, the body, the size, the storage quota). */
function fieldOf(err) {
  const f = err.problem && err.problem.field;
  if (f === 'name' || f === 'version' || f === 'entrypoint') return f;
  return 'file';
}

function Upload() {
  const [v, setV] = useState({ name: only || '', version: '', entrypoint: '' });
  const [file, setFile] = useState(null);
  const [fieldErr, setFieldErr] = useState({});
  const [msg, setMsg] = useState(null);
  const [progress, setProgress] = useState(null);
  const set = (k) => (e) => setV({ ...v, [k]: e.target.value });
  const submit = async (e) => {
    e.preventDefault();
    const form = e.currentTarget;
    setMsg(null);
    setFieldErr({});
    if (!file) {
      setFieldErr({ file: 'choose a .tar, .tar.gz or .zip file' });
      return;
    }
    setProgress({ sent: 0, total: file.size });
    try {
      const name = v.name.trim();
      const p = await uploadPackage(file, { name, version: v.version.trim(),
        entrypoint: v.entrypoint.trim() }, (sent, total) => setProgress({ sent, total }));
      setMsg({ ok: true, text: `Uploaded ${p.name} ${p.version} (${bytes(p.size_bytes)})` });
      setV({ ...v, version: '' });
      setFile(null);
      form.querySelector('input[type=file]').value = '';
      if (!names.value.includes(p.name)) names.value = [p.name, ...names.value];
      await loadName(p.name, false);
    } catch (err) {
      const msgText = err.status === 413 ? `${err.message} (the file is ${bytes(file.size)})`
        : err.message;
      setFieldErr({ [fieldOf(err)]: msgText });
    } finally {
      setProgress(null);
    }
  };
  const field = (k) => ({
    'aria-invalid': fieldErr[k] ? 'true' : undefined,
    'aria-describedby': fieldErr[k] ? `up-err-${k}` : undefined,
  });
  const errOf = (k) => fieldErr[k] && html`<span class="err field-err" id=${`up-err-${k}`}
    data-field-error=${k} role="alert">${fieldErr[k]}</span>`;
  return html`<form class="submit upload" onSubmit=${submit} aria-label="Upload a version">
    <label>Name <input name="pkg-name" required maxlength="128" value=${v.name} list="pkg-names"
      onInput=${set('name')} placeholder="report" size="14" ...${field('name')} />${errOf('name')}</label>
    <datalist id="pkg-names">${names.value.map((n) => html`<option value=${n} />`)}</datalist>
    <label>Version <input name="pkg-version" required maxlength="64" value=${v.version}
      onInput=${set('version')} placeholder="1.4.0" size="10" ...${field('version')} />${errOf('version')}</label>
    <label>Entrypoint <input name="pkg-entrypoint" maxlength="1024" value=${v.entrypoint}
      onInput=${set('entrypoint')} placeholder="bin/report (optional)" size="16"
      ...${field('entrypoint')} />${errOf('entrypoint')}</label>
    <label>Archive (.tar, .tar.gz, .zip) <input name="pkg-file" type="file" id="pkg-file"
      accept=".tar,.tar.gz,.tgz,.zip,application/gzip,application/x-tar,application/zip"
      onChange=${(e) => setFile(e.target.files[0] || null)} ...${field('file')} />${errOf('file')}</label>
    <button type="submit" disabled=${!!progress}>Upload</button>
    ${progress && html`<p class="progress"><progress id="upload-progress" max=${progress.total || 1}
      value=${progress.sent} aria-label="Upload progress"></progress>
      <span>${bytes(progress.sent)} of ${bytes(progress.total)}</span></p>`}
    ${msg && html`<p role="status" class=${msg.ok ? 'ok' : 'err'} id="upload-msg">${msg.text}</p>`}
  </form>`;
}

function setRowErr(name, id, text) {
  const g = groups.value.get(name) || {};
  setGroup(name, { rowErr: { ...(g.rowErr || {}), [id]: text } });
}

async function remove(p) {
  if (!confirm(`Delete ${p.name} ${p.version}? Jobs that ran it keep their reference; it ` +
      'cannot be run again.'))
    return;
  setRowErr(p.name, p.id, null);
  try {
    await api('DELETE', `/api/v1/packages/${p.id}`);
  } catch (e) {
    setRowErr(p.name, p.id, e.status === 409
      ? `Not deleted: ${e.message}. Move the channels elsewhere, let the jobs end (or cancel ` +
        'them) and change the schedules first.'
      : `Not deleted: ${e.message}`);
    return;
  }
  await loadName(p.name, false);
  const g = groups.value.get(p.name);
  if (g && !g.versions.length && !g.err) {
    names.value = names.value.filter((n) => n !== p.name);
  }
}

/* Moves (or makes) a channel of one name: PUT /api/v1/packages/{name}/channels/{channel}. */
function MoveChannel({ name, g }) {
  const [channel, setChannel] = useState(g.channels.length ? g.channels[0].channel : 'stable');
  const [version, setVersion] = useState('');
  const [fieldErr, setFieldErr] = useState({});
  const [busy, setBusy] = useState(false);
  const [msg, setMsg] = useState(null);
  const first = g.versions.find((p) => isRelease(p.version)) || g.versions[0];
  const ver = version || (first && first.version) || '';
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setFieldErr({});
    setMsg(null);
    try {
      const c = await api('PUT', `/api/v1/packages/${enc(name)}/channels/${enc(channel.trim())}`,
        { version: ver });
      setMsg(`${c.channel} → ${c.version}`);
      await loadName(name, false);
    } catch (err) {
      const f = err.problem && err.problem.field;
      setFieldErr({ [f === 'version' ? 'version' : 'channel']: err.message });
    } finally {
      setBusy(false);
    }
  };
  const id = `ch-${name}`;
  const errOf = (k) => fieldErr[k] && html`<span class="err field-err" role="alert"
    id=${`${id}-err-${k}`} data-field-error=${`channel-${k}`}>${fieldErr[k]}</span>`;
  return html`<form class="submit channel-move" onSubmit=${submit}
      aria-label=${`Move a channel of ${name}`} data-channel-form=${name}>
    <label>Channel <input name="channel" required maxlength="63" value=${channel} size="10"
      list=${`${id}-list`} onInput=${(e) => setChannel(e.target.value)}
      aria-invalid=${fieldErr.channel ? 'true' : undefined}
      aria-describedby=${fieldErr.channel ? `${id}-err-channel` : undefined} />${errOf('channel')}</label>
    <datalist id=${`${id}-list`}>${g.channels.map((c) => html`<option value=${c.channel} />`)}</datalist>
    <label>to version <select name="channel-version" value=${ver}
        onChange=${(e) => setVersion(e.target.value)}
        aria-invalid=${fieldErr.version ? 'true' : undefined}
        aria-describedby=${fieldErr.version ? `${id}-err-version` : undefined}>
      ${g.versions.map((p) => html`<option value=${p.version}>${p.version}</option>`)}
    </select>${errOf('version')}</label>
    <button type="submit" class="alt" disabled=${busy || !ver}>Move channel</button>
    ${msg && html`<p role="status" class="ok">Moved: ${msg}</p>`}
  </form>`;
}

function Sha({ p }) {
  const [copied, setCopied] = useState(false);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(p.sha256);
      setCopied(true);
    } catch (e) {
      setCopied(false);
    }
  };
  return html`<details class="sha">
    <summary><code title="SHA-256; open for all of it">${p.sha256.slice(0, SHORT_SHA)}…</code></summary>
    <code class="full" data-sha=${p.sha256}>${p.sha256}</code>
    ${' '}<button type="button" class="small plain" onClick=${copy}
      aria-label=${`Copy the SHA-256 of ${p.name} ${p.version}`}>${copied ? 'Copied' : 'Copy'}</button>
  </details>`;
}

function VersionRow({ p, latest, channels, err }) {
  const tags = channels.filter((c) => c.package_id === p.id);
  return html`<tr data-version=${p.version} data-package=${p.id}>
    <td><strong>${p.version}</strong>
      ${latest && html` <span class="tag latest" data-latest>latest</span>`}
      ${!isRelease(p.version) && html` <span class="tag muted">pre-release</span>`}
      ${tags.map((c) => html` <span class="tag channel" data-channel=${c.channel}>${c.channel}</span>`)}</td>
    <td class="num" data-size=${p.size_bytes}>${bytes(p.size_bytes)}</td>
    <td><${Sha} p=${p} /></td>
    <td>${p.entrypoint ? html`<code>${p.entrypoint}</code>` : html`<span class="empty">none</span>`}</td>
    <td><time datetime=${p.created_at}>${localTime(p.created_at)}</time></td>
    <td class="acts">${canOperate() && html`<button class="small" data-action="delete"
      onClick=${() => remove(p)} aria-label=${`Delete ${p.name} ${p.version}`}>Delete</button>`}</td>
  </tr>
  ${err && html`<tr class="detail-row"><td colspan="6"><p class="err" role="alert"
    data-delete-error=${p.version}>${err}</p></td></tr>`}`;
}

function Group({ name }) {
  const g = groups.value.get(name) || { versions: [], channels: [] };
  const latest = g.versions.find((p) => isRelease(p.version));
  const hid = `pkg-h-${name}`;
  return html`<section class="pkg" data-name=${name} aria-labelledby=${hid}>
    <h2 id=${hid}><a href=${`#/packages/${enc(name)}`}>${name}</a>
      <small class="muted"> ${g.versions.length}${g.cursor ? '+' : ''} version${g.versions.length === 1 && !g.cursor ? '' : 's'}</small></h2>
    <p class="pkg-refs" data-refs>
      <span>latest → ${latest ? html`<strong data-latest-version>${latest.version}</strong>`
        : html`<span class="empty">${g.cursor ? 'among older versions' : 'none (no release version)'}</span>`}</span>
      ${g.channels.map((c) => html`<span data-channel-points=${c.channel}>${c.channel} → <strong>${c.version}</strong></span>`)}
    </p>
    ${g.err && html`<p class="err" role="alert">${g.err}</p>`}
    ${canOperate() && g.versions.length > 0 && html`<${MoveChannel} name=${name} g=${g} />`}
    <div class="table-wrap">
      <table class="packages">
        <thead><tr>
          <th scope="col">Version</th><th scope="col">Size</th><th scope="col">SHA-256</th>
          <th scope="col">Entrypoint</th><th scope="col">Uploaded</th>
          <th scope="col"><span class="sr">Actions</span></th>
        </tr></thead>
        <tbody>${g.versions.map((p) => html`<${VersionRow} key=${p.id} p=${p}
          latest=${latest === p} channels=${g.channels} err=${g.rowErr && g.rowErr[p.id]} />`)}</tbody>
      </table>
    </div>
    ${g.cursor && html`<button class="small plain" onClick=${() => loadName(name, true)}
      disabled=${g.loading}>More versions</button>`}
  </section>`;
}

/* The name in #/packages/<name>, or null. */
function nameOf(arg) {
  try {
    return arg ? decodeURIComponent(arg) : null;
  } catch (e) {
    return arg; /* not %-encoded properly: the API says it is not a name */
  }
}

export function PackagesPage({ arg }) {
  only = nameOf(arg);
  useEffect(() => {
    names.value = [];
    groups.value = new Map();
    load(false);
    return onEvent((ev) => {
      if (ev.type === 'resync') load(false);
    });
  }, [arg]);
  return html`<section aria-labelledby="packages-h">
    <h1 id="packages-h">Packages${only ? html`: <code>${only}</code>` : ''}</h1>
    ${only && html`<p><a href="#/packages">← All packages</a></p>`}
    ${canOperate() && html`<${Upload} key=${only || ''} />`}
    ${error.value && html`<p class="err" role="alert">${error.value}</p>`}
    <p class="muted read-at">Read at ${readAt.value ? localTime(readAt.value) : '…'}.
      Changes made elsewhere show when read again.
      <button class="small alt" onClick=${() => load(false)} disabled=${loading.value}
        id="packages-refresh">Refresh</button></p>
    ${names.value.map((n) => html`<${Group} key=${n} name=${n} />`)}
    ${!loading.value && names.value.length === 0 && html`<p class="empty" id="no-packages">${only
      ? 'There is no package of this name.' : 'No packages yet.'}</p>`}
    ${cursor.value && html`<button onClick=${() => load(true)} disabled=${loading.value}>
      More packages</button>`}
  </section>`;
}
