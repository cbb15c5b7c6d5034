// A real OpenID provider for the issuer's sign-in tests (oidc-provider),
// on 127.0.0.1 at a free port, printed as `listening on URL` on stdout.
//
// Its clients are read from the JSON file OIDC_CLIENTS_FILE when the
// first request arrives (the test writes it once it knows the issuer's
// redirect URI). It signs people in and consents at once, with no pages:
// the account is the authorization request's `login_hint` (an email; a
// hint `unverified+EMAIL` gives `email_verified: false`), the subject
// `sub-` and the hint.
import http from 'node:http';
import fs from 'node:fs';
import Provider from 'oidc-provider';

const server = http.createServer();

function account(id) {
  const unverified = id.startsWith('unverified+');
  const email = unverified ? id.slice('unverified+'.length) : id;
  return {
    accountId: id,
    async claims() {
      return { sub: `sub-${id}`, email, email_verified: !unverified };
    },
  };
}

function build(issuer) {
  const clients = JSON.parse(fs.readFileSync(process.env.OIDC_CLIENTS_FILE, 'utf8'));
  const provider = new Provider(issuer, {
    clients,
    findAccount: (ctx, id) => account(id),
    claims: { openid: ['sub'], email: ['email', 'email_verified'] },
    // As Google does: the email claims are in the ID token itself.
    conformIdTokenClaims: false,
    features: { devInteractions: { enabled: false } },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    pkce: { required: () => true },
    cookies: { keys: ['coditect-test-cookie-key'] },
  });
  return provider;
}

async function interact(provider, req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  if (prompt.name === 'login') {
    const id = params.login_hint || 'alice@example.com';
    await provider.interactionFinished(req, res, { login: { accountId: id } }, {
      mergeWithLastSubmission: false,
    });
    return;
  }
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  grant.addOIDCScope(params.scope);
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } }, {
    mergeWithLastSubmission: true,
  });
}

server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  let provider;
  let callback;
  server.on('request', async (req, res) => {
    try {
      if (!provider) {
        provider = build(issuer);
        callback = provider.callback();
      }
      if (req.url.startsWith('/interaction/')) {
        await interact(provider, req, res);
        return;
      }
      callback(req, res);
    } catch (e) {
      res.statusCode = 500;
      res.end(String(e && e.stack ? e.stack : e));
    }
  });
  process.stdout.write(`listening on ${issuer}\n`);
});
