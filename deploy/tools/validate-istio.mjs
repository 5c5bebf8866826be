// Validates Istio manifests offline against Istio's CRD schemas (@kubernetes-models/istio), strictly, and
// checks what keyward needs of them: the ext_authz provider fails closed with a 503, and every
// CUSTOM policy names a provider the mesh config defines.
//
//   node deploy/tools/validate-istio.mjs FILE...
//
// Prints one line per resource; exits 1 naming the file, the resource and the error on the first
// bad one.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { parseAllDocuments } from "yaml";

const require = createRequire(import.meta.url);

// Strict, like `kubectl apply --validate=strict`: Istio's CRD schemas leave unknown fields to the
// API server's pruning, which silently drops a misspelt field (a `notPathz` would make a policy
// match everything). Every schema object that lists its properties here rejects any other.
const validator = require("@kubernetes-models/validate");
const registerLoose = validator.register;
validator.register = (id, schema) =>
  registerLoose(id, id === UNDESCRIBED_SPEC ? { ...schema } : strict(schema));
// The package describes IstioOperator's envelope but not its spec; the ext_authz provider in it
// is checked field by field below (PROVIDER_FIELDS, from Istio's mesh/v1alpha1/config.proto).
const UNDESCRIBED_SPEC = "install.istio.io.v1alpha1.IstioOperator";
const PROVIDER_FIELDS = new Set([
  "service",
  "port",
  "timeout",
  "failOpen",
  "statusOnError",
  "includeRequestBodyInCheck",
  "clearRouteCache",
]);

function strict(schema) {
  if (Array.isArray(schema)) return schema.map(strict);
  if (schema === null || typeof schema !== "object") return schema;
  const copy = Object.fromEntries(Object.entries(schema).map(([k, v]) => [k, strict(v)]));
  if (
    copy.properties &&
    copy.additionalProperties === undefined &&
    !copy["x-kubernetes-preserve-unknown-fields"]
  ) {
    copy.additionalProperties = false;
  }
  return copy;
}

function fail(where, message) {
  console.error(`ERROR ${where}: ${message}`);
  process.exit(1);
}

function modelFor(where, apiVersion, kind) {
  const [group, version] = String(apiVersion ?? "").split("/");
  if (!group || !version || !kind) fail(where, "apiVersion and kind are required");
  try {
    return require(`@kubernetes-models/istio/${group}/${version}/${kind}`)[kind];
  } catch {
    fail(where, `${apiVersion} ${kind} is not an Istio resource known to @kubernetes-models/istio`);
  }
}

function seconds(duration) {
  const match = /^(\d+(?:\.\d+)?)(ms|s)$/.exec(String(duration));
  if (!match) return NaN;
  return match[2] === "ms" ? Number(match[1]) / 1000 : Number(match[1]);
}

const files = process.argv.slice(2);
if (files.length === 0) fail("usage", "node validate-istio.mjs FILE...");

const providers = new Map();
const customPolicies = [];
for (const file of files) {
  for (const [index, document] of parseAllDocuments(readFileSync(file, "utf8")).entries()) {
    if (document.errors.length) fail(`${file} document ${index + 1}`, document.errors[0].message);
    const resource = document.toJS();
    if (resource === null) continue;
    const name = `${resource.kind ?? "?"}/${resource.metadata?.name ?? "?"}`;
    const where = `${file} ${name}`;
    const Model = modelFor(where, resource.apiVersion, resource.kind);
    try {
      new Model(resource).validate();
    } catch (error) {
      fail(where, error.message);
    }
    for (const provider of resource.spec?.meshConfig?.extensionProviders ?? []) {
      providers.set(provider.name, { where, grpc: provider.envoyExtAuthzGrpc });
    }
    if (resource.kind === "AuthorizationPolicy" && resource.spec?.action === "CUSTOM") {
      customPolicies.push({ where, provider: resource.spec.provider?.name });
    }
    console.log(`ok ${where}`);
  }
}

for (const [name, { where, grpc }] of providers) {
  if (!grpc) continue;
  for (const field of Object.keys(grpc)) {
    if (!PROVIDER_FIELDS.has(field)) fail(where, `provider ${name}: unknown envoyExtAuthzGrpc field ${field}`);
  }
  if (!grpc.service || !Number.isInteger(grpc.port)) fail(where, `provider ${name}: service and port are required`);
  if (grpc.failOpen !== false) fail(where, `provider ${name}: failOpen must be false (fail closed)`);
  if (String(grpc.statusOnError) !== "503") {
    fail(where, `provider ${name}: statusOnError must be "503" (keyward undecidable is never a 401/403)`);
  }
  const timeout = seconds(grpc.timeout);
  if (!(timeout > 0 && timeout <= 2)) fail(where, `provider ${name}: timeout ${grpc.timeout} must be set, ≤ 2s`);
}
for (const { where, provider } of customPolicies) {
  if (providers.size && !providers.has(provider)) {
    fail(where, `CUSTOM provider ${provider} is not defined by any meshConfig.extensionProviders`);
  }
}
