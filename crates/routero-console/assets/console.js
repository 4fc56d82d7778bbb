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

// The keys listed last, and what the filter shows of them.
let listedKeys = [];

function keyStatus(key) {
  if (key.revoked) return 'revoked';
  return key.expires && Date.parse(key.expires) < Date.now() ? 'expired' : 'active';
}

function shownKeys() {
  const search = $('keys-search').value.trim().toLowerCase();
  const status = $('keys-status').value;
  return listedKeys.filter((key) => {
    const alias = (key.metadata && typeof key.metadata.alias === 'string') ? key.metadata.alias : '';
    const text = [alias, key.key_id, key.user_id || '', key.team_id || ''].join(' ').toLowerCase();
    return (!search || text.includes(search)) && (!status || keyStatus(key) === status);
  });
}

function actionButton(label, name, className, act) {
  const button = document.createElement('button');
  button.type = 'button';
  button.className = className;
  button.textContent = label;
  button.setAttribute('aria-label', name);
  button.addEventListener('click', act);
  return button;
}

function renderKeys() {
  const rows = $('keys-rows');
  rows.replaceChildren();
  const shown = shownKeys();
  for (const key of shown) {
    const row = document.createElement('tr');
    const alias = (key.metadata && typeof key.metadata.alias === 'string') ? key.metadata.alias : '';
    const models = (key.models || []).join(', ') || 'every model';
    const status = keyStatus(key);
    row.append(cell(alias), cell(key.key_id), cell(models), cell(when(key.expires)), cell(status),
      cell(key.user_id || ''), cell(key.team_id || ''));
    const actions = document.createElement('td');
    if (status === 'active') {
      const revoke = actionButton('Revoke', `Revoke key ${key.key_id}`, 'danger', () => revokeKeys([key.key_id]));
      revoke.dataset.keyId = key.key_id;
      const rotate = actionButton('Rotate', `Rotate key ${key.key_id}`, 'quiet', () => rotateKey(key.key_id));
      rotate.dataset.rotate = key.key_id;
      actions.append(rotate, revoke);
    }
    row.append(actions);
    rows.append(row);
  }
  const active = shown.filter((key) => keyStatus(key) === 'active');
  const bulk = $('keys-revoke-shown');
  bulk.hidden = active.length < 2;
  bulk.textContent = `Revoke the ${active.length} active keys shown`;
  bulk.dataset.confirming = '';
}

async function loadKeys() {
  listedKeys = (await api('GET', '/key/list?include_revoked=true')).keys;
  renderKeys();
}

async function revokeKeys(keyIds) {
  try {
    await api('POST', '/key/delete', { key_ids: keyIds });
    say(keyIds.length === 1 ? `Key ${keyIds[0]} revoked.` : `${keyIds.length} keys revoked.`);
    await loadKeys();
  } catch (error) {
    say(`Not revoked: ${error.message}`, true);
  }
}

// Revoking many keys takes a second press, naming how many.
function revokeShown() {
  const bulk = $('keys-revoke-shown');
  const active = shownKeys().filter((key) => keyStatus(key) === 'active').map((key) => key.key_id);
  if (bulk.dataset.confirming !== 'yes') {
    bulk.dataset.confirming = 'yes';
    bulk.textContent = `Press again to revoke ${active.length} keys`;
    return;
  }
  revokeKeys(active);
}

function showSecret(issued) {
  $('secret-value').textContent = issued.key;
  $('secret').hidden = false;
  $('secret-copy').focus();
}

async function rotateKey(keyId) {
  try {
    const issued = await api('POST', '/key/regenerate', { key_id: keyId });
    showSecret(issued);
    say(`Key ${keyId} rotated: its old secret no longer works.`);
    await loadKeys();
  } catch (error) {
    say(`Not rotated: ${error.message}`, true);
  }
}

async function createKey(event) {
  event.preventDefault();
  const body = {};
  const alias = $('create-alias').value.trim();
  const models = $('create-models').value.split(',').map((m) => m.trim()).filter(Boolean);
  const duration = $('create-duration').value.trim();
  const list = (id) => $(id).value.split(',').map((item) => item.trim()).filter(Boolean);
  const cidrs = list('create-cidrs');
  const roles = list('create-roles');
  const budget = $('create-budget').value.trim();
  const period = $('create-budget-period').value.trim();
  if (alias) body.metadata = { alias };
  if (models.length) body.models = models;
  if (duration) body.duration = duration;
  if (cidrs.length) body.allowed_cidrs = cidrs;
  if (roles.length) body.roles = roles;
  if (budget) body.max_budget = Number(budget);
  if (period) body.budget_duration = period;
  try {
    const issued = await api('POST', '/key/generate', body);
    showSecret(issued);
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

function signInSso(protocol) {
  return (event) => {
    event.preventDefault();
    const tenant = encodeURIComponent($('sso-tenant').value.trim());
    window.location.assign(`/sso/${protocol}/login?tenant=${tenant}&return=console`);
  };
}

async function signOut() {
  try { await api('POST', '/logout'); } catch (error) { /* the session may be gone already */ }
  window.location.assign('/console');
}

// The audit trail: a page at a time, newest first; the cursor of the next page once shown.
let auditCursor = null;

async function loadAudit(more) {
  const params = new URLSearchParams({ limit: '50' });
  const type = $('audit-type').value.trim();
  const since = $('audit-since').value;
  if (type) params.set('type', type);
  if (since) params.set('since', `${since}T00:00:00Z`);
  if (more && auditCursor) params.set('cursor', auditCursor);
  const { events, next_cursor: next } = await api('GET', `/audit/events?${params}`);
  const rows = $('audit-rows');
  if (!more) rows.replaceChildren();
  for (const record of events) {
    const event = record.event || {};
    const actor = event.actor ? `${event.actor.kind || ''} ${event.actor.id || ''}`.trim() : '';
    const resource = event.resource ? `${event.resource.kind || ''} ${event.resource.id || ''}`.trim() : '';
    const row = document.createElement('tr');
    row.append(cell(String(record.seq)), cell(when(event.time)), cell(event.action || ''), cell(actor),
      cell(event.outcome || ''), cell(resource));
    rows.append(row);
  }
  auditCursor = next;
  $('audit-older').hidden = !next;
}

async function verifyTrail() {
  const result = $('verify-result');
  result.className = '';
  result.textContent = 'Verifying…';
  try {
    const verified = await api('POST', '/audit/verify');
    if (verified.verified) {
      result.className = 'verified';
      const unsigned = verified.last_seq > verified.signed_through
        ? ` Records after seq ${verified.signed_through} are chained but not yet signed.` : '';
      result.textContent = `Verified: ${verified.records} records, seq ${verified.first_seq} to ${verified.last_seq}, `
        + `hash chain intact, signed by checkpoints through seq ${verified.signed_through}.${unsigned} `
        + 'A cut tail shows only against a copy kept elsewhere (the export, your SIEM).';
    } else {
      result.className = 'tampered';
      result.textContent = `NOT VERIFIED at seq ${verified.seq}: ${verified.message}`;
    }
  } catch (error) {
    result.className = 'tampered';
    result.textContent = `Not verified: ${error.message}`;
  }
}

const SVG = 'http://www.w3.org/2000/svg';

function svg(tag, attributes, text) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

async function loadSpend() {
  const group = $('spend-group').value;
  const report = await api('GET', `/spend/report?group_by=${encodeURIComponent(group)}`);
  $('spend-group-head').textContent = $('spend-group').selectedOptions[0].textContent;
  $('spend-total').textContent = `Spend by ${group}: ${report.total_spend} USD in all`;
  $('spend-csv').setAttribute('href', `/spend/report?group_by=${encodeURIComponent(group)}&format=csv`);
  const rows = $('spend-rows');
  rows.replaceChildren();
  const chart = $('spend-chart');
  for (const bar of [...chart.querySelectorAll('g')]) bar.remove();
  const most = Math.max(0, ...report.rows.map((row) => Number(row.spend) || 0));
  report.rows.forEach((line, index) => {
    const name = line[group] || '(none)';
    const row = document.createElement('tr');
    row.append(cell(name), cell(String(line.requests)), cell(String(line.input_tokens)),
      cell(String(line.output_tokens)), cell(String(line.spend)));
    rows.append(row);
    const width = most > 0 ? Math.max(1, Math.round((Number(line.spend) / most) * 400)) : 1;
    const bar = svg('g', {});
    bar.append(svg('text', { x: 0, y: index * 24 + 16 }, name.slice(0, 28)),
      svg('rect', { x: 200, y: index * 24 + 4, width, height: 16 }),
      svg('text', { x: 210 + width, y: index * 24 + 16 }, `${line.spend} USD`));
    chart.append(bar);
  });
  chart.setAttribute('height', String(report.rows.length * 24 + 8));
}

async function loadPeople(can) {
  const { users } = await api('GET', '/users');
  const rows = $('users-rows');
  rows.replaceChildren();
  for (const user of users) {
    const row = document.createElement('tr');
    row.append(cell(user.display_name || ''), cell(user.user_name), cell(user.email || ''),
      cell(user.active ? 'yes' : 'no'), cell(user.scim_managed ? 'identity provider (read-only)' : 'Routero'));
    rows.append(row);
  }
  if (can['team:list']) {
    const { teams } = await api('GET', '/teams');
    const teamRows = $('teams-rows');
    teamRows.replaceChildren();
    for (const team of teams) {
      const row = document.createElement('tr');
      row.append(cell(team.name), cell(team.id), cell(team.external_id ? 'identity provider (read-only)' : 'Routero'));
      teamRows.append(row);
    }
  }
  $('sessions-table').hidden = !can['admin_key:list'];
  if (can['admin_key:list']) await loadSessions(can);
}

async function loadSessions(can) {
  const { sessions } = await api('GET', '/sessions');
  const rows = $('sessions-rows');
  rows.replaceChildren();
  for (const session of sessions) {
    const row = document.createElement('tr');
    const who = session.user_id || session.local_admin_id || '';
    row.append(cell(session.id), cell(who), cell((session.roles || []).join(', ')), cell(session.source_ip || ''),
      cell(new Date(session.last_seen_at * 1000).toISOString().replace('T', ' ').slice(0, 16)));
    const actions = document.createElement('td');
    if (can['admin_key:revoke']) {
      const end = document.createElement('button');
      end.type = 'button';
      end.className = 'danger';
      end.textContent = 'End';
      end.setAttribute('aria-label', `End session ${session.id}`);
      end.addEventListener('click', async () => {
        try {
          await api('DELETE', `/sessions/${encodeURIComponent(session.id)}`);
          say(`Session ${session.id} ended.`);
          await loadSessions(can);
        } catch (error) {
          say(`Not ended: ${error.message}`, true);
        }
      });
      actions.append(end);
    }
    row.append(actions);
    rows.append(row);
  }
}

async function loadModels(can) {
  const { models } = await api('GET', '/models');
  const { credentials } = can['credential:list'] ? await api('GET', '/credentials') : { credentials: [] };
  // Deployments name credentials by id; their names where the caller may list them.
  const names = new Map(credentials.map((c) => [c.id, c.name]));
  const rows = $('models-rows');
  rows.replaceChildren();
  for (const model of models) {
    const row = document.createElement('tr');
    const deployments = (model.deployments || [])
      .map((d) => `${names.get(d.credential_id) || d.credential_id} → ${d.model}`).join('; ');
    const tags = Object.entries(model.tags || {}).map(([k, v]) => `${k}=${v}`).join(', ');
    const prices = model.pricing ? `${model.pricing.input_per_mtok} / ${model.pricing.output_per_mtok}` : 'not priced';
    row.append(cell(model.name), cell(deployments), cell(model.strategy || ''), cell(tags), cell(prices));
    rows.append(row);
  }
  $('credentials-table').hidden = !can['credential:list'];
  if (can['credential:list']) {
    const credentialRows = $('credentials-rows');
    credentialRows.replaceChildren();
    for (const credential of credentials) {
      const row = document.createElement('tr');
      row.append(cell(credential.name), cell(credential.provider), cell(credential.base_url || ''));
      credentialRows.append(row);
    }
  }
  $('planes-table').hidden = !can['tenant:read'];
  if (can['tenant:read']) {
    const planes = await api('GET', '/data-planes');
    $('planes-caption').textContent = `Data planes (the control plane publishes version ${planes.version})`;
    const planeRows = $('planes-rows');
    planeRows.replaceChildren();
    for (const plane of planes.data_planes) {
      const row = document.createElement('tr');
      const age = Math.max(0, Math.round(Date.now() / 1000 - plane.reported_at));
      row.append(cell(plane.node_id), cell(String(plane.version)), cell(`${age} s ago`));
      planeRows.append(row);
    }
  }
}

async function loadGuardrails(can) {
  const pipeline = await api('GET', '/guardrails');
  $('guardrails-text').value = JSON.stringify(pipeline, null, 2);
  $('guardrails-text').readOnly = !can['policy:update'];
  $('guardrails-save').hidden = !can['policy:update'];
}

async function saveGuardrails() {
  const result = $('guardrails-result');
  result.className = '';
  let pipeline;
  try {
    pipeline = JSON.parse($('guardrails-text').value);
  } catch (error) {
    result.className = 'tampered';
    result.textContent = `Not JSON: ${error.message}`;
    return;
  }
  try {
    await api('PUT', '/guardrails', pipeline);
    result.className = 'verified';
    result.textContent = 'Saved: data planes apply it with their next snapshot.';
  } catch (error) {
    result.className = 'tampered';
    result.textContent = `Not saved: ${error.message}`;
  }
}

const SECTIONS = ['keys', 'audit', 'spend', 'people', 'models', 'guardrails'];

function show(section) {
  for (const name of SECTIONS) {
    $(name).hidden = name !== section;
    $(`nav-${name}`).removeAttribute('aria-current');
  }
  $(`nav-${section}`).setAttribute('aria-current', 'page');
}

async function route(allowed, can) {
  const wanted = window.location.hash.slice(1);
  const section = allowed.includes(wanted) ? wanted : allowed[0];
  if (!section) {
    say('Your roles give you nothing to see here.', true);
    return;
  }
  show(section);
  try {
    if (section === 'keys') await loadKeys();
    if (section === 'audit') await loadAudit(false);
    if (section === 'spend') await loadSpend();
    if (section === 'people') await loadPeople(can);
    if (section === 'models') await loadModels(can);
    if (section === 'guardrails') await loadGuardrails(can);
  } catch (error) {
    say(`Not loaded: ${error.message}`, true);
  }
}

async function start() {
  if (!csrf) {
    $('signin').hidden = false;
    $('sso-form').addEventListener('submit', signInSso('oidc'));
    $('saml-submit').addEventListener('click', signInSso('saml'));
    $('local-form').addEventListener('submit', signInLocal);
    return;
  }
  let me;
  try {
    me = await api('GET', '/me');
  } catch (error) {
    say(`Session unusable: ${error.message}`, true);
    return;
  }
  $('who').textContent = `${me.principal} (${(me.roles || []).join(', ')}) in tenant ${me.tenant_id}`;
  // What the policies allow this person: sections and buttons they would be refused are not
  // shown (the admin API refuses them anyway).
  const can = me.can || {};
  if (Object.values(can).some((decided) => decided === null)) {
    say('The policy engine did not answer for everything: some sections may be missing.', true);
  }
  const allowed = [];
  if (can['key:list'] || can['key:create']) allowed.push('keys');
  if (can['audit_log:read']) allowed.push('audit');
  if (can['spend_report:read']) allowed.push('spend');
  if (can['user:list']) allowed.push('people');
  if (can['model:list']) allowed.push('models');
  if (can['policy:read']) allowed.push('guardrails');
  for (const name of allowed) $(`nav-${name}`).hidden = false;
  $('create-form').hidden = !can['key:create'];
  $('export').hidden = !can['audit_log:export'];
  $('nav').hidden = false;
  $('logout').addEventListener('click', signOut);
  $('create-form').addEventListener('submit', createKey);
  $('secret-copy').addEventListener('click', () => navigator.clipboard.writeText($('secret-value').textContent)
    .then(() => say('Copied.'), () => say('Copy refused by the browser: select the key and copy it.', true)));
  $('secret-done').addEventListener('click', forgetSecret);
  $('verify').addEventListener('click', verifyTrail);
  $('audit-filters').addEventListener('submit', (event) => { event.preventDefault(); loadAudit(false).catch((e) => say(e.message, true)); });
  $('audit-older').addEventListener('click', () => loadAudit(true).catch((e) => say(e.message, true)));
  $('spend-filters').addEventListener('submit', (event) => { event.preventDefault(); loadSpend().catch((e) => say(e.message, true)); });
  $('guardrails-save').addEventListener('click', saveGuardrails);
  $('keys-search').addEventListener('input', renderKeys);
  $('keys-status').addEventListener('change', renderKeys);
  $('keys-filter').addEventListener('submit', (event) => event.preventDefault());
  $('keys-revoke-shown').addEventListener('click', revokeShown);
  window.addEventListener('hashchange', () => route(allowed, can));
  await route(allowed, can);
}

document.addEventListener('DOMContentLoaded', start);
