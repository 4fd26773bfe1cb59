// The test suite's OpenID provider: the npm package `oidc-provider` (OpenID Certified),
// configured the way an organisation's identity provider would be for the gateway:
//
// - JWT access tokens for any resource indicator (RFC 8707) on loopback or example.com,
//   audience = the resource, RS256, scopes `mcp` and `admin`;
// - agents: clients with the client credentials grant, whose `groups` and `roles`
//   (client metadata) become claims of their tokens;
// - people: the authorization code grant with PKCE for the public client `sdk`; the login
//   interaction auto-approves the dev account `alice` (or the request's `login_hint`);
// - opaque tokens for the clients `agent-opaque` and `ops-opaque` (an operator's), checked
//   by introspection (client `gateway`);
// - test endpoints: POST /test/rotate (a new signing key, published first in the JWKS,
//   without a restart of the process), POST /test/sign (any claims, signed with the current
//   key, for expired tokens and other issuers).
//
// Usage: node provider.mjs --port PORT   (prints `listening ISSUER` when ready)
// Run through scripts/oidc-provider, which installs `oidc-provider` into a cache first.

import { createServer } from 'node:http';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const modules = process.env.OIDC_PROVIDER_MODULES;
const load = (name, entry) => import(pathToFileURL(join(modules, name, entry)).href);
const { default: Provider } = await load('oidc-provider', 'lib/index.js');
const { SignJWT, importJWK } = await load('jose', 'dist/webapi/index.js');

const { values } = parseArgs({ options: { port: { type: 'string', default: '0' } } });
const server = createServer();
await new Promise((resolve) => server.listen(Number(values.port), '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const accounts = {
  alice: { email: 'alice@example.com', groups: ['eng-platform'], roles: ['operator'] },
  bob: { email: 'bob@example.com', groups: ['eng-sales'], roles: ['viewer'] },
};

const agent = (id, extra) => ({
  client_id: id,
  client_secret: `${id}-secret`,
  grant_types: ['client_credentials'],
  redirect_uris: [],
  response_types: [],
  scope: 'mcp admin',
  ...extra,
});

const clients = [
  agent('agent-platform', { groups: ['eng-platform'] }),
  agent('agent-sales', { groups: ['eng-sales'] }),
  agent('agent-nobody', { groups: ['marketing'] }),
  agent('ops-viewer', { roles: ['viewer'] }),
  agent('ops-operator', { roles: ['operator'] }),
  agent('agent-opaque', { groups: ['eng-platform'] }), // gets opaque tokens (for introspection)
  agent('ops-opaque', { roles: ['viewer'] }), // an operator with opaque tokens
  agent('gateway', { scope: 'mcp' }), // the gateway's own client, to introspect tokens
  {
    client_id: 'sdk',
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1/callback'],
    scope: 'openid mcp offline_access',
  },
];

function newKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'RS256', use: 'sig' };
}

const OPAQUE = ['agent-opaque', 'ops-opaque'];
let keys = [newKey()];
let provider;

function build() {
  const p = new Provider(issuer, {
    clients,
    jwks: { keys },
    extraClientMetadata: { properties: ['groups', 'roles'] },
    findAccount: async (ctx, id) => (accounts[id] ? { accountId: id, claims: async () => ({ sub: id, ...accounts[id] }) } : undefined),
    claims: { openid: ['sub'], email: ['email'] },
    scopes: ['openid', 'mcp', 'admin', 'offline_access'],
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (ctx, client, oneOf) => oneOf,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (ctx, resource, client) => {
          const url = new URL(resource);
          if (!['127.0.0.1', 'localhost', 'other.example.com'].includes(url.hostname)) {
            throw new Error(`unknown resource ${resource}`);
          }
          return {
            scope: client.scope.split(' ').filter((s) => !['openid', 'offline_access'].includes(s)).join(' '),
            audience: resource,
            accessTokenTTL: 300,
            accessTokenFormat: OPAQUE.includes(client.clientId) ? 'opaque' : 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    extraTokenClaims: async (ctx, token) => {
      if (token.kind === 'ClientCredentials') {
        const meta = ctx.oidc.client.metadata();
        return { groups: meta.groups ?? [], roles: meta.roles ?? [] };
      }
      const account = accounts[token.accountId];
      return account ? { email: account.email, groups: account.groups, roles: account.roles } : undefined;
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  });
  p.proxy = false;
  return p;
}

provider = build();

// Auto-approve: the login prompt signs in `login_hint` (default alice), consent grants all asked.
async function interaction(req, res) {
  const { prompt, params, session, grantId } = await provider.interactionDetails(req, res);
  if (prompt.name === 'login') {
    const accountId = accounts[params.login_hint] ? params.login_hint : 'alice';
    await provider.interactionFinished(req, res, { login: { accountId } }, { mergeWithLastSubmission: false });
    return;
  }
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const { details } = prompt;
  if (details.missingOIDCScope) grant.addOIDCScope(details.missingOIDCScope.join(' '));
  if (details.missingOIDCClaims) grant.addOIDCClaims(details.missingOIDCClaims);
  for (const [indicator, scope] of Object.entries(details.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scope.join(' '));
  }
  await provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } }, { mergeWithLastSubmission: true });
}

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : {};
}

function reply(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

async function testEndpoint(req, res, path) {
  if (path === '/test/rotate') {
    keys = [newKey(), ...keys];
    provider = build();
    return reply(res, 200, { kid: keys[0].kid });
  }
  if (path === '/test/sign') {
    const { claims, header } = await readJson(req);
    const jwk = keys[0];
    const key = await importJWK(jwk, 'RS256');
    const now = Math.floor(Date.now() / 1000);
    const token = await new SignJWT({ iss: issuer, iat: now, exp: now + 300, ...claims })
      .setProtectedHeader({ alg: 'RS256', kid: jwk.kid, typ: 'at+jwt', ...header })
      .sign(key);
    return reply(res, 200, { token });
  }
  return reply(res, 404, { error: 'not_found' });
}

server.on('request', (req, res) => {
  const path = new URL(req.url, issuer).pathname;
  const handle = path.startsWith('/test/')
    ? testEndpoint(req, res, path)
    : path.startsWith('/interaction/')
      ? interaction(req, res)
      : provider.callback()(req, res);
  Promise.resolve(handle).catch((err) => {
    if (!res.headersSent) reply(res, 500, { error: String(err) });
  });
});

process.stdout.write(`listening ${issuer}\n`);
process.on('SIGTERM', () => process.exit(0));
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
