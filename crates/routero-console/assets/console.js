// Routero's console. Everything shown comes from the admin API and is written as text
// (textContent), never parsed as markup. Changes carry the session's CSRF token.
'use strict';

const csrf = document.querySelector('meta[name="routero-csrf"]').content;

function $(id) { return document.getElementById(id); }

function say(text, failed) {
  const status = $('status');
  status.textContent = text;
  status.classList.toggle('error', Boolean(failed));
}

async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET') headers['X-CSRF-Token'] = csrf;
  const response = await fetch(path, {
    method, headers, credentials: 'same-origin', cache: 'no-store',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = answer.error || {};
    throw new Error(`${error.code || response.status}: ${error.message || response.statusText}`);
  }
  return answer;
}

function cell(text) {
  const td = document.createElement('td');
  td.textContent = text;
  return td;
}

function when(rfc3339) {
  return rfc3339 ? rfc3339.replace('T', ' ').slice(0, 16) : 'never';
}

async function loadKeys() {
  const { keys } = await api('GET', '/key/list?include_revoked=true');
  const rows = $('keys-rows');
  rows.replaceChildren();
  for (const key of keys) {
    const row = document.createElement('tr');
    const alias = (key.metadata && typeof key.metadata.alias === 'string') ? key.metadata.alias : '';
    const models = (key.models || []).join(', ') || 'every model';
    const status = key.revoked ? 'revoked' : (key.expires && Date.parse(key.expires) < Date.now() ? 'expired' : 'active');
    row.append(cell(alias), cell(key.key_id), cell(models), cell(when(key.expires)), cell(status));
    const actions = document.createElement('td');
    if (status === 'active') {
      const revoke = document.createElement('button');
      revoke.type = 'button';
      revoke.className = 'danger';
      revoke.textContent = 'Revoke';
      revoke.setAttribute('aria-label', `Revoke key ${key.key_id}`);
      revoke.dataset.keyId = key.key_id;
      revoke.addEventListener('click', () => revokeKey(key.key_id));
      actions.append(revoke);
    }
    row.append(actions);
    rows.append(row);
  }
}

async function revokeKey(keyId) {
  try {
    await api('POST', '/key/delete', { key_ids: [keyId] });
    say(`Key ${keyId} revoked.`);
    await loadKeys();
  } catch (error) {
    say(`Not revoked: ${error.message}`, true);
  }
}

async function createKey(event) {
  event.preventDefault();
  const body = {};
  const alias = $('create-alias').value.trim();
  const models = $('create-models').value.split(',').map((m) => m.trim()).filter(Boolean);
  const duration = $('create-duration').value.trim();
  if (alias) body.metadata = { alias };
  if (models.length) body.models = models;
  if (duration) body.duration = duration;
  try {
    const issued = await api('POST', '/key/generate', body);
    $('secret-value').textContent = issued.key;
    $('secret').hidden = false;
    $('secret-copy').focus();
    $('create-form').reset();
    say(`Key ${issued.key_id} created.`);
    await loadKeys();
  } catch (error) {
    say(`Not created: ${error.message}`, true);
  }
}

function forgetSecret() {
  $('secret-value').textContent = '';
  $('secret').hidden = true;
}

async function signInLocal(event) {
  event.preventDefault();
  try {
    const response = await fetch('/login/local', {
      method: 'POST', credentials: 'same-origin', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({
        tenant: $('local-tenant').value, username: $('local-username').value, password: $('local-password').value,
      }),
    });
    if (!response.ok) throw new Error((await response.json().catch(() => ({}))).error?.message || response.statusText);
    window.location.reload();
  } catch (error) {
    say(`Not signed in: ${error.message}`, true);
  }
}

function signInSso(event) {
  event.preventDefault();
  const tenant = encodeURIComponent($('sso-tenant').value.trim());
  window.location.assign(`/sso/oidc/login?tenant=${tenant}&return=console`);
}

async function signOut() {
  try { await api('POST', '/logout'); } catch (error) { /* the session may be gone already */ }
  window.location.assign('/console');
}

async function start() {
  if (!csrf) {
    $('signin').hidden = false;
    $('sso-form').addEventListener('submit', signInSso);
    $('local-form').addEventListener('submit', signInLocal);
    return;
  }
  try {
    const me = await api('GET', '/me');
    $('who').textContent = `${me.principal} (${(me.roles || []).join(', ')})`;
  } catch (error) {
    say(`Session unusable: ${error.message}`, true);
    return;
  }
  $('nav').hidden = false;
  $('keys').hidden = false;
  $('logout').addEventListener('click', signOut);
  $('create-form').addEventListener('submit', createKey);
  $('secret-copy').addEventListener('click', () => navigator.clipboard.writeText($('secret-value').textContent)
    .then(() => say('Copied.'), () => say('Copy refused by the browser: select the key and copy it.', true)));
  $('secret-done').addEventListener('click', forgetSecret);
  try {
    await loadKeys();
  } catch (error) {
    say(`Keys not listed: ${error.message}`, true);
  }
}

document.addEventListener('DOMContentLoaded', start);
