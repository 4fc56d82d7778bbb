// A real OpenID provider (panva/oidc-provider 9.x) on loopback, for the single sign-on tests.
// env: OP_PORT; RP_REDIRECTS (comma-separated redirect URIs of the client `gateway`);
// OP_KEY_FILE (the private RS256 JWK it signs with, so a test can also sign as it would);
// OP_CLIENT_SECRET. The dev login form takes any password; the login is the account id.
import Provider from 'oidc-provider';
import { readFileSync } from 'node:fs';

const port = Number(process.env.OP_PORT);
const issuer = `http://127.0.0.1:${port}`;
const jwk = JSON.parse(readFileSync(process.env.OP_KEY_FILE, 'utf8'));

const person = (sub, groups, extra = {}) => ({
  sub, email: `${sub}@example.test`, email_verified: true, name: sub, preferred_username: sub, groups, ...extra,
});
const USERS = {
  alice: person('alice', ['gw-admins']),
  bob: person('bob', ['gw-users']),
  carol: person('carol', ['gw-users']),
  dave: person('dave', ['gw-users']),
  erin: person('erin', ['nobody-maps-this']),
  frank: person('frank', ['gw-users'], { email_verified: false }),
  grace: person('grace', ['gw-users'], { email_verified: undefined }),
  ivan: person('ivan', ['gw-users']),
  judy: person('judy', ['gw-users', 'gw-admins']),
  fiona: person('fiona', ['gw-finance']),
  // Another account whose (verified) address is alice's.
  mallory: person('mallory', ['gw-admins'], { email: 'alice@example.test' }),
};

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'gateway', client_secret: process.env.OP_CLIENT_SECRET,
    redirect_uris: process.env.RP_REDIRECTS.split(','),
    grant_types: ['authorization_code'], response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic', id_token_signed_response_alg: 'RS256',
  }],
  jwks: { keys: [jwk] },
  cookies: { keys: ['oidc-test-cookie-key'] },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'preferred_username'], groups: ['groups'] },
  scopes: ['openid', 'email', 'profile', 'groups'],
  pkce: { required: () => true },
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: true } },
  findAccount: async (ctx, id) => USERS[id] && { accountId: id, claims: async () => USERS[id] },
  loadExistingGrant: async (ctx) => {
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope(ctx.oidc.params.scope || 'openid');
    grant.addOIDCClaims(['email', 'email_verified', 'name', 'preferred_username', 'groups']);
    await grant.save();
    return grant;
  },
  ttl: { AccessToken: 600, AuthorizationCode: 60, IdToken: 600, Interaction: 600, Session: 3600, Grant: 3600 },
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.listen(port, '127.0.0.1', () => console.log(`OP listening ${issuer}`));
