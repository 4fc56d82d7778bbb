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

// A row of `cells` (elements) added to the table body `rows`; returned.
function addRow(rows, ...cells) {
  const row = document.createElement('tr');
  row.append(...cells);
  rows.append(row);
  return row;
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
    const alias = (key.metadata && typeof key.metadata.alias === 'string') ? key.metadata.alias : '';
    const models = (key.models || []).join(', ') || 'every model';
    const status = keyStatus(key);
    const actions = document.createElement('td');
    if (status === 'active') {
      const revoke = actionButton('Revoke', `Revoke key ${key.key_id}`, 'danger', () => revokeKeys([key.key_id]));
      revoke.dataset.keyId = key.key_id;
      const rotate = actionButton('Rotate', `Rotate key ${key.key_id}`, 'quiet', () => rotateKey(key.key_id));
      rotate.dataset.rotate = key.key_id;
      actions.append(rotate, revoke);
    }
    addRow(rows, cell(alias), cell(key.key_id), cell(models), cell(when(key.expires)), cell(status),
      cell(key.user_id || ''), cell(key.team_id || ''), actions);
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
    addRow(rows, cell(String(record.seq)), cell(when(event.time)), cell(event.action || ''), cell(actor),
      cell(event.outcome || ''), cell(resource));
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

// The largest value of `items` (0 for none).
function largest(items) {
  return items.reduce((most, item) => Math.max(most, item.value), 0);
}

// Empties a chart, keeping its title.
function clearChart(chart) {
  for (const part of [...chart.querySelectorAll('g')]) part.remove();
  chart.setAttribute('height', '0');
}

// One horizontal bar per item ({label, value, text}), longest for the largest value.
function horizontalBars(chart, items) {
  clearChart(chart);
  const most = largest(items);
  items.forEach((item, index) => {
    const width = most > 0 ? Math.max(1, Math.round((item.value / most) * 400)) : 1;
    const bar = svg('g', {});
    bar.append(svg('text', { x: 0, y: index * 24 + 16 }, item.label.slice(0, 28)),
      svg('rect', { x: 200, y: index * 24 + 4, width, height: 16 }),
      svg('text', { x: 210 + width, y: index * 24 + 16 }, item.text));
    chart.append(bar);
  });
  chart.setAttribute('height', String(items.length * 24 + 8));
}

// The most bars a chart over time draws; more periods are added up in runs, each bar
// labelled with its run's first period.
const MOST_BARS = 200;

// One vertical bar per period ({label, value, text}) in order, labelled below as room allows,
// each with its own tooltip; the largest value named at the top, as `shown` writes a value.
function barsOverTime(chart, points, shown) {
  clearChart(chart);
  if (!points.length) return;
  const run = Math.ceil(points.length / MOST_BARS);
  const bars = [];
  for (let at = 0; at < points.length; at += run) {
    const part = points.slice(at, at + run);
    const value = part.reduce((sum, point) => sum + point.value, 0);
    const label = part[0].label;
    bars.push(run === 1 ? part[0] : { label, value, text: `${part[0].label} to ${part[part.length - 1].label}: ${shown(value)}` });
  }
  const height = 140;
  const slot = Math.min(48, Math.floor(700 / bars.length));
  const step = Math.ceil(90 / slot);
  const most = largest(bars);
  const drawn = svg('g', {});
  const per = run === 1 ? 'per period' : `per ${run} periods`;
  drawn.append(svg('text', { x: 0, y: 12 }, `${chart.querySelector('title').textContent}: at most ${shown(most)} ${per}`));
  bars.forEach((bar, index) => {
    const tall = most > 0 ? Math.max(1, Math.round((bar.value / most) * height)) : 1;
    const x = 40 + index * slot;
    const rect = svg('rect', { x, y: 20 + height - tall, width: Math.max(2, slot - 1), height: tall });
    rect.append(svg('title', {}, run === 1 ? `${bar.label}: ${bar.text}` : bar.text));
    drawn.append(rect);
    if (index % step === 0) drawn.append(svg('text', { x, y: height + 36 }, bar.label));
  });
  chart.append(drawn);
  chart.setAttribute('height', String(height + 44));
  // Room for the last label past the last bar.
  chart.setAttribute('width', String(Math.max(760, 40 + bars.length * slot + 90)));
}

// A period as shown: its day, and its hour when it has one.
function period(start) {
  if (!start) return 'in all';
  return start.endsWith('T00:00:00Z') ? start.slice(0, 10) : when(start);
}

// Adds up `lines` by `key`, in the order keys first appear.
function sums(lines, key, value) {
  const totals = new Map();
  for (const line of lines) totals.set(key(line), (totals.get(key(line)) || 0) + value(line));
  return [...totals.entries()];
}

// `lines` added up per period (`YYYY-MM-DDTHH:00:00Z`, as the API names them), every hour or
// day of the report's range (`from` to `to` or now; at most 1000) with those that had nothing
// as zero, labelled for people.
function overTime(lines, interval, value, report) {
  const totals = new Map(sums(lines, (line) => line.period, value));
  const step = interval === 'hour' ? 3600e3 : 86400e3;
  const floor = (time) => Math.floor(time / step) * step;
  const ends = [...totals.keys()].map((start) => Date.parse(start))
    .concat([Date.parse(report.from), report.to ? Date.parse(report.to) - 1 : Date.now()])
    .filter(Number.isFinite);
  if (!totals.size) return [];
  const first = floor(ends.reduce((a, b) => Math.min(a, b)));
  const last = floor(ends.reduce((a, b) => Math.max(a, b)));
  const points = [];
  for (let at = first; at <= last && points.length < 1000; at += step) {
    const start = new Date(at).toISOString().replace('.000Z', 'Z');
    points.push([period(start), totals.get(start) || 0]);
  }
  return points;
}

// "1 finding", "2 findings".
function counted(count, noun) {
  return `${count} ${noun}${count === 1 ? '' : 's'}`;
}

function money(usd) {
  return String(Math.round(usd * 1e6) / 1e6);
}

// From/until day inputs as the API's query: whole UTC days.
function range(params, fromId, toId) {
  if (fromId && $(fromId).value) params.set('from', `${$(fromId).value}T00:00:00Z`);
  if (toId && $(toId).value) params.set('to', `${$(toId).value}T00:00:00Z`);
}

async function loadSpend() {
  const group = $('spend-group').value;
  const interval = $('spend-interval').value;
  const params = new URLSearchParams({ group_by: group });
  if (interval) params.set('interval', interval);
  range(params, 'spend-from', 'spend-to');
  const report = await api('GET', `/spend/report?${params}`);
  $('spend-group-head').textContent = $('spend-group').selectedOptions[0].textContent;
  $('spend-total').textContent = `Spend by ${group}: ${report.total_spend} USD in all`
    + (report.truncated ? ' (the first lines only: choose a shorter range)' : '');
  params.set('format', 'csv');
  $('spend-csv').setAttribute('href', `/spend/report?${params}`);
  const rows = $('spend-rows');
  rows.replaceChildren();
  for (const line of report.rows) {
    addRow(rows, cell(period(line.period)), cell(line[group] || '(none)'), cell(String(line.requests)),
      cell(String(line.input_tokens)), cell(String(line.output_tokens)), cell(String(line.spend)));
  }
  horizontalBars($('spend-chart'), sums(report.rows, (line) => line[group] || '(none)', (line) => Number(line.spend) || 0)
    .map(([label, value]) => ({ label, value, text: `${money(value)} USD` })));
  const periods = (value) => (interval ? overTime(report.rows, interval, value, report) : []);
  const usd = (value) => `${money(value)} USD`;
  const requests = (value) => counted(value, 'request');
  barsOverTime($('spend-time-chart'), periods((line) => Number(line.spend) || 0)
    .map(([label, value]) => ({ label, value, text: usd(value) })), usd);
  barsOverTime($('requests-time-chart'), periods((line) => line.requests)
    .map(([label, value]) => ({ label, value, text: requests(value) })), requests);
}

async function loadBudgets() {
  const { budgets } = await api('GET', '/budgets');
  const rows = $('budgets-rows');
  rows.replaceChildren();
  for (const budget of budgets) {
    const known = budget.spent !== null;
    const share = budget.max_budget > 0 ? (budget.spent || 0) / budget.max_budget : 1;
    const used = document.createElement('td');
    const meter = document.createElement('meter');
    meter.min = 0;
    meter.max = 1;
    meter.low = 0.8;
    meter.high = 0.99;
    meter.optimum = 0;
    meter.value = Math.min(1, share);
    meter.setAttribute('aria-label', `Budget of ${budget.kind} ${budget.id || ''} used`);
    if (known) used.append(meter, document.createTextNode(` ${Math.round(share * 100)}%`));
    const during = budget.budget_duration
      ? `${budget.budget_duration}, since ${when(budget.period_start)}` : 'never resets';
    const reached = budget.thresholds.map((percent) => (budget.reached.includes(percent) ? `${percent}% reached` : `${percent}%`));
    const row = addRow(rows, cell(`${budget.kind} ${budget.id || ''}`.trim()), cell(money(budget.max_budget)), cell(during),
      cell(known ? money(budget.spent) : 'not read (too many different periods)'), used, cell(reached.join(', ')));
    if (budget.reached.includes(100)) row.className = 'over';
  }
}

async function loadPeople(can) {
  const { users } = await api('GET', '/users');
  const rows = $('users-rows');
  rows.replaceChildren();
  for (const user of users) {
    addRow(rows, cell(user.display_name || ''), cell(user.user_name), cell(user.email || ''),
      cell(user.active ? 'yes' : 'no'), cell(user.scim_managed ? 'identity provider (read-only)' : 'Routero'),
      cell(user.roles ? (user.roles.join(', ') || 'none: no access') : 'no mapping rules'));
  }
  $('mapping-table').hidden = !can['role:list'];
  if (can['role:list']) {
    const mapping = await api('GET', '/role-mappings');
    const mappingRows = $('mapping-rows');
    mappingRows.replaceChildren();
    for (const rule of mapping.rules || []) {
      addRow(mappingRows, cell(rule.group), cell(rule.roles.join(', ')));
    }
    addRow(mappingRows, cell('(anyone no rule matches)'), cell((mapping.default_roles || []).join(', ') || 'none: no access'));
  }
  if (can['team:list']) {
    const { teams } = await api('GET', '/teams');
    const teamRows = $('teams-rows');
    teamRows.replaceChildren();
    for (const team of teams) {
      addRow(teamRows, cell(team.name), cell(team.id), cell(team.external_id ? 'identity provider (read-only)' : 'Routero'));
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
    const who = session.user_id || session.local_admin_id || '';
    const actions = document.createElement('td');
    if (can['admin_key:revoke']) {
      actions.append(actionButton('End', `End session ${session.id}`, 'danger', async () => {
        try {
          await api('DELETE', `/sessions/${encodeURIComponent(session.id)}`);
          say(`Session ${session.id} ended.`);
          await loadSessions(can);
        } catch (error) {
          say(`Not ended: ${error.message}`, true);
        }
      }));
    }
    addRow(rows, cell(session.id), cell(who), cell((session.roles || []).join(', ')), cell(session.source_ip || ''),
      cell(when(new Date(session.last_seen_at * 1000).toISOString())), actions);
  }
}

// How long ago `then` was, both in the control plane's Unix seconds.
function ago(then, now) {
  const seconds = Math.max(0, now - then);
  if (seconds < 120) return `${seconds} s ago`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

// A data plane that has not reported for this long is shown as silent (it reports every 10 s).
const SILENT_AFTER = 60;

async function loadModels(can) {
  const { models } = await api('GET', '/models');
  const { credentials } = can['credential:list'] ? await api('GET', '/credentials') : { credentials: [] };
  const planes = can['tenant:read'] ? await api('GET', '/data-planes') : null;
  // Deployments name credentials by id; their names where the caller may list them.
  const names = new Map(credentials.map((c) => [c.id, c.name]));
  // Per deployment, the data planes where its breaker is not closed.
  const tripped = new Map();
  for (const plane of planes ? planes.data_planes : []) {
    for (const breaker of plane.breakers) {
      const deployment = `${breaker.credential_id} ${breaker.model}`;
      tripped.set(deployment, [...(tripped.get(deployment) || []), breaker.state]);
    }
  }
  const rows = $('models-rows');
  rows.replaceChildren();
  for (const model of models) {
    const deployments = (model.deployments || []).map((d) => {
      const states = tripped.get(`${d.credential_id} ${d.model}`) || [];
      const breaker = states.length
        ? ` (breaker ${[...new Set(states)].join('/')} in ${states.length} of ${planes.data_planes.length} data planes)` : '';
      return `${names.get(d.credential_id) || d.credential_id} → ${d.model}${breaker}`;
    }).join('; ');
    const tags = Object.entries(model.tags || {}).map(([k, v]) => `${k}=${v}`).join(', ');
    const prices = model.pricing ? `${model.pricing.input_per_mtok} / ${model.pricing.output_per_mtok}` : 'not priced';
    addRow(rows, cell(model.name), cell(deployments), cell(model.strategy || ''), cell(tags), cell(prices));
  }
  $('credentials-table').hidden = !can['credential:list'];
  if (can['credential:list']) {
    const credentialRows = $('credentials-rows');
    credentialRows.replaceChildren();
    for (const credential of credentials) {
      addRow(credentialRows, cell(credential.name), cell(credential.provider), cell(credential.base_url || ''));
    }
  }
  $('planes').hidden = !planes;
  if (planes) showPlanes(planes);
}

// The data-plane health panel (one card per replica) and its table.
function showPlanes(planes) {
  $('planes-caption').textContent = `Data planes (the control plane publishes version ${planes.version})`;
  const panel = $('planes-panel');
  const planeRows = $('planes-rows');
  panel.replaceChildren();
  planeRows.replaceChildren();
  for (const plane of planes.data_planes) {
    const behind = Math.max(0, planes.version - plane.version);
    const silent = planes.now - plane.reported_at > SILENT_AFTER;
    const version = behind ? `version ${plane.version}, ${behind} behind` : `version ${plane.version}, current`;
    const applied = plane.applied_at ? ago(plane.applied_at, planes.now) : 'unknown';
    const reported = ago(plane.reported_at, planes.now);
    const breakers = plane.breakers.map((b) => `${b.credential || b.credential_id} → ${b.model}: ${b.state}`).join('; ') || 'none';
    const health = silent ? 'silent' : (behind ? 'behind' : 'up to date');
    const card = document.createElement('li');
    card.className = `plane ${health === 'up to date' ? '' : health}`.trim();
    const name = document.createElement('strong');
    name.textContent = plane.node_id;
    card.append(name, document.createTextNode(` ${health}: ${version}; applied ${applied}; reported ${reported}; `
      + `${counted(plane.breakers.length, 'breaker')} not closed`));
    panel.append(card);
    addRow(planeRows, cell(plane.node_id), cell(version), cell(applied), cell(reported), cell(breakers));
  }
}

async function loadGuardrails(can) {
  $('findings').hidden = !can['audit_log:read'];
  $('pipeline').hidden = !can['policy:read'];
  if (can['audit_log:read']) await loadFindings();
  if (!can['policy:read']) return;
  const pipeline = await api('GET', '/guardrails');
  $('guardrails-text').value = JSON.stringify(pipeline, null, 2);
  $('guardrails-text').readOnly = !can['policy:update'];
  $('guardrails-save').hidden = !can['policy:update'];
}

async function loadFindings() {
  const params = new URLSearchParams({ interval: $('findings-interval').value });
  range(params, 'findings-from');
  const found = await api('GET', `/guardrails/findings?${params}`);
  const { rows: lines, truncated } = found;
  if (truncated) say('Only the first lines of the findings are shown: choose a shorter range.', true);
  const rows = $('findings-rows');
  rows.replaceChildren();
  for (const line of lines) {
    addRow(rows, cell(period(line.period)), cell(line.stage), cell(line.detector), cell(line.action),
      cell(String(line.findings)), cell(String(line.requests)));
  }
  const findings = (value) => counted(value, 'finding');
  barsOverTime($('findings-time-chart'), overTime(lines, found.interval, (line) => line.findings, found)
    .map(([label, value]) => ({ label, value, text: findings(value) })), findings);
  horizontalBars($('findings-chart'), sums(lines, (line) => `${line.detector} → ${line.action}`, (line) => line.findings)
    .map(([label, value]) => ({ label, value, text: findings(value) })));
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
    if (section === 'spend') await Promise.all([loadSpend(), loadBudgets()]);
    if (section === 'people') await loadPeople(can);
    if (section === 'models') await loadModels(can);
    if (section === 'guardrails') await loadGuardrails(can);
  } catch (error) {
    say(`Not loaded: ${error.message}`, true);
  }
}

// A UTC day `days` before today, as a date input holds it.
function daysAgo(days) {
  return new Date(Date.now() - days * 86400e3).toISOString().slice(0, 10);
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
  $('who').textContent = `${me.name || me.principal} (${(me.roles || []).join(', ')}) in tenant ${me.tenant_id}`;
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
  if (can['policy:read'] || can['audit_log:read']) allowed.push('guardrails');
  for (const name of allowed) $(`nav-${name}`).hidden = false;
  $('create-form').hidden = !can['key:create'];
  $('export').hidden = !can['audit_log:export'];
  $('nav').hidden = false;
  $('spend-from').value = daysAgo(30);
  $('findings-from').value = daysAgo(30);
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
  $('findings-filters').addEventListener('submit', (event) => { event.preventDefault(); loadFindings().catch((e) => say(e.message, true)); });
  $('keys-search').addEventListener('input', renderKeys);
  $('keys-status').addEventListener('change', renderKeys);
  $('keys-filter').addEventListener('submit', (event) => event.preventDefault());
  $('keys-revoke-shown').addEventListener('click', revokeShown);
  window.addEventListener('hashchange', () => route(allowed, can));
  await route(allowed, can);
}

document.addEventListener('DOMContentLoaded', start);
