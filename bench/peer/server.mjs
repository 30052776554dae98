// panva's oidc-provider set up like idp, as the peer bench/run.py measures in the same run.
//
//   BENCH_PEER_CONFIG='{"port":…,"workers":2,"redis_url":…,"redis_prefix":…,"user":{…},"clients":[…]}' node server.mjs
//
// Configured after idp's defaults so the comparison is about the implementation, not the settings:
// ES256 signing key (made at start), PKCE S256 required, rotating refresh tokens, JWT access tokens for
// client_credentials, introspection and UserInfo on, the same token lifetimes. It runs as N processes
// (node:cluster, like idp's N gunicorn workers) sharing one store in Redis, as idp's workers share
// PostgreSQL and Redis: oidc-provider's default in-memory adapter is per process (and an LRU of 1,000
// entries), so a token minted by one process would be unknown to the other. See bench/README.md.
//
// The only interaction is a bare sign-in form for the bench user (plain password comparison: the peer
// is never measured on sign-ins) and consent granted without a page, as idp does for a first-party app.

import cluster from 'node:cluster';
import crypto from 'node:crypto';
import { Redis } from 'ioredis';
import Provider, { errors } from 'oidc-provider';

const config = JSON.parse(process.env.BENCH_PEER_CONFIG || '{}');
for (const key of ['port', 'redis_url', 'redis_prefix', 'user', 'clients']) {
  if (config[key] === undefined) {
    console.error(`BENCH_PEER_CONFIG lacks "${key}"`);
    process.exit(2);
  }
}
const workers = Math.max(1, Number(config.workers) || 1);
const issuer = `http://127.0.0.1:${config.port}`;
// Same lifetimes as idp.settings defaults (access 10 min, code 60 s, ID token 1 h, refresh 14 days idle).
const ACCESS_TTL = 600;
const REFRESH_TTL = 14 * 24 * 3600;
const GRANT_TTL = REFRESH_TTL;
// Access tokens for client_credentials are JWTs for this resource, as idp's are (aud is idp's issuer there).
const API_RESOURCE = `${issuer}/api`;

if (cluster.isPrimary) {
  // One key and one cookie secret for all processes: JWKS must be the same whichever process answers,
  // and a cookie set by one process must be readable by the other.
  const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = { ...privateKey.export({ format: 'jwk' }), alg: 'ES256', use: 'sig', kid: crypto.randomUUID() };
  const env = {
    BENCH_PEER_JWK: JSON.stringify(jwk),
    BENCH_PEER_COOKIE_KEY: crypto.randomBytes(32).toString('base64url'),
  };
  let stopping = false;
  let ready = 0;
  for (let i = 0; i < workers; i += 1) cluster.fork(env);
  cluster.on('message', (_worker, message) => {
    if (message === 'listening' && (ready += 1) === workers) {
      console.log(`peer listening on ${issuer} with ${workers} process(es)`);
    }
  });
  cluster.on('exit', (worker, code, signal) => {
    // A worker dying under load would silently halve the peer: stop everything so run.py sees it.
    if (!stopping) {
      console.error(`peer worker ${worker.process.pid} exited (${signal || code}); stopping`);
      stopping = true;
      for (const w of Object.values(cluster.workers)) w.kill('SIGTERM');
      process.exitCode = 1;
    }
  });
  const stop = () => {
    stopping = true;
    for (const w of Object.values(cluster.workers)) w.kill('SIGTERM');
    // Workers close their servers and Redis connections; do not wait forever for a stuck one.
    setTimeout(() => process.exit(0), 5000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  await serve();
}

// ------------------------------------------------------------------------------------------ the store

// oidc-provider's adapter contract (docs: "adapter"): upsert / find / findByUid / findByUserCode /
// consume / destroy / revokeByGrantId, one instance per model name. Each entry is a Redis hash holding
// the JSON payload and, once consumed, the time of consumption, so consume() is one HSET and cannot race
// with a read-modify-write of the payload.
const GRANTABLE = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest']);

function makeAdapter(redis, prefix) {
  const k = (...parts) => prefix + parts.join(':');

  return class RedisAdapter {
    constructor(model) {
      this.model = model;
    }

    key(id) {
      return k(this.model, id);
    }

    async upsert(id, payload, expiresIn) {
      const key = this.key(id);
      const tx = redis.multi().del(key).hset(key, 'payload', JSON.stringify(payload));
      if (expiresIn) tx.expire(key, expiresIn);
      if (this.model === 'Session' && payload.uid) {
        tx.set(k('sessionUid', payload.uid), id);
        if (expiresIn) tx.expire(k('sessionUid', payload.uid), expiresIn);
      }
      if (payload.userCode) {
        tx.set(k('userCode', payload.userCode), id);
        if (expiresIn) tx.expire(k('userCode', payload.userCode), expiresIn);
      }
      if (GRANTABLE.has(this.model) && payload.grantId) {
        // Remembered under the grant so revokeByGrantId (refresh token reuse, consent revoked) finds them.
        const members = k('grant', payload.grantId);
        tx.sadd(members, key);
        // No member outlives its grant, so the set lives as long as a grant can (EXPIRE … GT would need
        // Redis 7).
        tx.expire(members, GRANT_TTL);
      }
      await tx.exec();
    }

    async find(id) {
      const entry = await redis.hgetall(this.key(id));
      if (!entry.payload) return undefined;
      const payload = JSON.parse(entry.payload);
      if (entry.consumed) payload.consumed = Number(entry.consumed);
      return payload;
    }

    async findByUid(uid) {
      const id = await redis.get(k('sessionUid', uid));
      return id ? this.find(id) : undefined;
    }

    async findByUserCode(userCode) {
      const id = await redis.get(k('userCode', userCode));
      return id ? this.find(id) : undefined;
    }

    async consume(id) {
      await redis.hset(this.key(id), 'consumed', Math.floor(Date.now() / 1000));
    }

    async destroy(id) {
      await redis.del(this.key(id));
    }

    async revokeByGrantId(grantId) {
      const members = k('grant', grantId);
      const keys = await redis.smembers(members);
      await redis.del(members, ...keys);
    }
  };
}

// ------------------------------------------------------------------------------------------ the provider

function readForm(ctx) {
  return new Promise((resolve, reject) => {
    let body = '';
    ctx.req.setEncoding('utf8');
    ctx.req.on('data', (chunk) => {
      body += chunk;
      if (body.length > 16384) reject(new Error('form too large'));
    });
    ctx.req.on('end', () => resolve(new URLSearchParams(body)));
    ctx.req.on('error', reject);
  });
}

function sameSecret(a, b) {
  // Digests first: timingSafeEqual needs equal lengths, and the length must not leak either.
  const digest = (v) => crypto.createHash('sha256').update(String(v)).digest();
  return crypto.timingSafeEqual(digest(a), digest(b));
}

function escapeHtml(value) {
  return String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

async function serve() {
  const redis = new Redis(config.redis_url, { lazyConnect: false, maxRetriesPerRequest: 2 });
  const { user } = config;

  const provider = new Provider(issuer, {
    adapter: makeAdapter(redis, config.redis_prefix),
    clients: config.clients,
    jwks: { keys: [JSON.parse(process.env.BENCH_PEER_JWK)] },
    cookies: { keys: [process.env.BENCH_PEER_COOKIE_KEY] },
    clientDefaults: { id_token_signed_response_alg: 'ES256' },
    claims: { openid: ['sub'], profile: ['name'], email: ['email', 'email_verified'] },
    scopes: ['openid', 'offline_access'],
    async findAccount(_ctx, id) {
      if (id !== user.id) return undefined;
      return {
        accountId: id,
        async claims() {
          return { sub: id, name: user.name, email: user.email, email_verified: true };
        },
      };
    },
    pkce: { required: () => true },
    // idp rotates on every use (a refresh token works once); oidc-provider's default rotates only late in
    // a token's life for confidential clients.
    rotateRefreshToken: true,
    ttl: {
      AccessToken: ACCESS_TTL,
      ClientCredentials: ACCESS_TTL,
      AuthorizationCode: 60,
      IdToken: 3600,
      RefreshToken: REFRESH_TTL,
      Grant: GRANT_TTL,
      Session: REFRESH_TTL,
      Interaction: 15 * 60,
    },
    responseTypes: ['code'],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: {
        enabled: true,
        // As idp: a client sees only its own tokens; anything else is reported inactive.
        allowedPolicy: async (_ctx, client, token) => token.clientId === client.clientId,
      },
      revocation: { enabled: true },
      userinfo: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // Only the machine client's token gets a resource (and so the JWT format). A user's access token
        // stays opaque: oidc-provider serves UserInfo only for tokens without a resource and refuses to
        // introspect JWTs, so this is the configuration in which its users' tokens work at both.
        async defaultResource(ctx) {
          return ctx.oidc.params.grant_type === 'client_credentials' ? API_RESOURCE : undefined;
        },
        async getResourceServerInfo(_ctx, resourceIndicator) {
          if (resourceIndicator !== API_RESOURCE) throw new errors.InvalidTarget();
          return {
            scope: 'api',
            audience: API_RESOURCE,
            accessTokenTTL: ACCESS_TTL,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'ES256' } },
          };
        },
        async useGrantedResource() {
          return false;
        },
      },
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    renderError(ctx, out) {
      ctx.type = 'application/json';
      ctx.body = out;
    },
  });

  // One access-log line per request, as gunicorn writes for idp and the bare Flask reference.
  provider.use(async (ctx, next) => {
    const started = process.hrtime.bigint();
    await next();
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    process.stdout.write(`${ctx.ip} "${ctx.method} ${ctx.path}" ${ctx.status} ${ms.toFixed(2)}ms\n`);
  });

  // The interaction endpoints, mounted before the provider's own routes.
  provider.use(async (ctx, next) => {
    const match = ctx.path.match(/^\/interaction\/([^/]+)(\/login)?$/);
    if (!match) return next();
    const interaction = await provider.interactionDetails(ctx.req, ctx.res);
    if (interaction.uid !== match[1]) ctx.throw(400, 'interaction mismatch');
    const { prompt, params } = interaction;

    if (ctx.method === 'GET' && prompt.name === 'login') {
      ctx.type = 'html';
      ctx.body = `<!doctype html><title>Sign in</title><form method="post" action="/interaction/${escapeHtml(interaction.uid)}/login">`
        + '<input name="username" autocomplete="username"><input name="password" type="password">'
        + '<button>Sign in</button></form>';
      return undefined;
    }

    if (ctx.method === 'POST' && match[2] && prompt.name === 'login') {
      const form = await readForm(ctx);
      if (!(sameSecret(form.get('username') || '', user.email) && sameSecret(form.get('password') || '', user.password))) {
        ctx.status = 401;
        ctx.type = 'html';
        ctx.body = '<!doctype html><p>Wrong email or password.</p>';
        return undefined;
      }
      const to = await provider.interactionResult(ctx.req, ctx.res, { login: { accountId: user.id } },
        { mergeWithLastSubmission: false });
      ctx.status = 303;
      ctx.redirect(to);
      ctx.status = 303;
      return undefined;
    }

    if (ctx.method === 'GET' && prompt.name === 'consent') {
      // First-party app: everything asked is granted without a page, as idp's --first-party does.
      const { details } = prompt;
      const grant = interaction.grantId
        ? await provider.Grant.find(interaction.grantId)
        : new provider.Grant({ accountId: interaction.session.accountId, clientId: params.client_id });
      if (details.missingOIDCScope) grant.addOIDCScope(details.missingOIDCScope.join(' '));
      if (details.missingOIDCClaims) grant.addOIDCClaims(details.missingOIDCClaims);
      for (const [indicator, scopes] of Object.entries(details.missingResourceScopes || {})) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
      const grantId = await grant.save();
      const to = await provider.interactionResult(ctx.req, ctx.res,
        { consent: interaction.grantId ? {} : { grantId } }, { mergeWithLastSubmission: true });
      ctx.status = 303;
      ctx.redirect(to);
      ctx.status = 303;
      return undefined;
    }

    ctx.throw(400, `unexpected ${ctx.method} for prompt ${prompt.name}`);
    return undefined;
  });

  provider.on('server_error', (_ctx, err) => console.error('server_error', err));

  const server = provider.listen(config.port, '127.0.0.1', () => process.send?.('listening'));
  // Like gunicorn's keep-alive for wrk's persistent connections.
  server.keepAliveTimeout = 5000;
  process.on('SIGTERM', () => {
    server.close();
    server.closeAllConnections?.();
    redis.quit().finally(() => process.exit(0));
  });
}
