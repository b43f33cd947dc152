// A Node.js client of content_service, written the way a team in another language would:
// @grpc/grpc-js + @grpc/proto-loader reading our .proto files from protos/ (no generated code).
//
//   node tests/integration/node/client.js CONTENT_ADDRESS ADMIN_KEY [VECTOR_ADDRESS]
//
// Creates a team, its key, a site, an environment, a section definition and a page with
// sections, reads the page back by slug, checks that a call without a key is UNAUTHENTICATED,
// and prints a JSON summary on stdout. With VECTOR_ADDRESS it also waits (up to 60 s) for
// semantic search, with the team's own key, to find the page. Exits non-zero on any failure.
"use strict";

const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const ROOT = path.resolve(__dirname, "..", "..", "..");
const PROTOS = path.join(ROOT, "protos");

const [address, adminKey, vectorAddress] = process.argv.slice(2);
if (!address || !adminKey) {
  console.error("usage: node client.js CONTENT_ADDRESS ADMIN_KEY");
  process.exit(2);
}

// google/protobuf/*.proto (Struct, Timestamp, FieldMask, Empty) come with proto-loader's
// protobufjs; our own files resolve from protos/.
const definition = protoLoader.loadSync(
  ["loom/content/v1/tenancy.proto", "loom/content/v1/pages.proto"],
  { includeDirs: [PROTOS], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true },
);
const loom = grpc.loadPackageDefinition(definition).loom.content.v1;
const credentials = grpc.credentials.createInsecure();
const tenancy = new loom.TenancyService(address, credentials);
const pages = new loom.PageService(address, credentials);

// google.protobuf.Struct <-> plain JSON. protobufjs ships the well-known types pre-parsed with
// camelCase field names (numberValue, structValue...): keepCase applies to our files only.
function toValue(v) {
  if (v === null || v === undefined) return { nullValue: "NULL_VALUE" };
  if (typeof v === "number") return { numberValue: v };
  if (typeof v === "string") return { stringValue: v };
  if (typeof v === "boolean") return { boolValue: v };
  if (Array.isArray(v)) return { listValue: { values: v.map(toValue) } };
  return { structValue: toStruct(v) };
}
function toStruct(obj) {
  return { fields: Object.fromEntries(Object.entries(obj).map(([k, v]) => [k, toValue(v)])) };
}
function fromValue(v) {
  switch (v.kind) {
    case "nullValue": return null;
    case "numberValue": return v.numberValue;
    case "stringValue": return v.stringValue;
    case "boolValue": return v.boolValue;
    case "listValue": return (v.listValue.values || []).map(fromValue);
    case "structValue": return fromStruct(v.structValue);
    default: throw new Error(`unknown Value kind ${v.kind}`);
  }
}
function fromStruct(s) {
  return Object.fromEntries(Object.entries((s && s.fields) || {}).map(([k, v]) => [k, fromValue(v)]));
}

function call(client, method, request, key) {
  const metadata = new grpc.Metadata();
  if (key) metadata.set("authorization", `Bearer ${key}`);
  const deadline = new Date(Date.now() + 20000);
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline }, (err, response) => {
      if (err) reject(err);
      else resolve(response);
    });
  });
}

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

async function waitForSearchHit(key, env, pageId) {
  const vectorDefinition = protoLoader.loadSync(["loom/vector/v1/vector.proto"], {
    includeDirs: [PROTOS], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
  });
  const vectorPackage = grpc.loadPackageDefinition(vectorDefinition).loom.vector.v1;
  const vector = new vectorPackage.VectorService(vectorAddress, credentials);
  const request = {
    collections: ["COLLECTION_PAGES", "COLLECTION_SECTIONS"],
    scope: { environment_id: env.id, site_id: env.site_id },
    query_text: "a greeting written in JavaScript",
    limit: 10,
  };
  const deadline = Date.now() + 60000;
  try {
    while (Date.now() < deadline) {
      const answer = await call(vector, "Search", request, key);
      const ids = answer.results.flatMap((r) => [r.document.id, r.document.source_id]);
      if (ids.includes(pageId)) return true;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    return false;
  } finally {
    vector.close();
  }
}

async function main() {
  const suffix = Math.random().toString(16).slice(2, 10);
  const team = await call(tenancy, "CreateTeam", { team: { name: `node-${suffix}` } }, adminKey);
  const key = await call(tenancy, "CreateApiKey", { team_id: team.id, name: "node" }, adminKey);
  const secret = key.secret;
  const site = await call(tenancy, "CreateSite", { site: { name: "Node site" } }, secret);
  const env = await call(
    tenancy, "CreateEnvironment", { site_id: site.id, environment: { name: "staging" } }, secret,
  );
  const hero = await call(pages, "CreateSectionDefinition", {
    environment_id: env.id,
    section_definition: {
      name: "hero",
      schema: toStruct({
        type: "object",
        properties: { title: { type: "string" }, count: { type: "integer" } },
        required: ["title"],
      }),
      default_content: toStruct({ title: "Welcome" }),
    },
  }, secret);
  const created = await call(pages, "CreatePage", {
    environment_id: env.id,
    request_id: `node-${suffix}`,
    page: {
      slug: "from-node",
      title: "Written from Node.js",
      status: "CONTENT_STATUS_PUBLISHED",
      metadata: toStruct({ lang: "en", tags: ["node", "grpc-js"] }),
      sections: [
        { definition_id: hero.id, content: toStruct({ title: "Hello from Node", count: 3 }) },
        { definition_id: hero.id },
      ],
    },
  }, secret);
  const got = await call(
    pages, "GetPageBySlug", { environment_id: env.id, slug: "from-node" }, secret,
  );
  check(got.id === created.id, "GetPageBySlug returns the created page");
  check(got.status === "CONTENT_STATUS_PUBLISHED", `status ${got.status}`);
  check(Number(got.create_time.seconds) > 0, "create_time is set");

  let unauthenticated = null;
  try {
    await call(pages, "GetPage", { id: created.id }, null);
  } catch (err) {
    unauthenticated = err.code === grpc.status.UNAUTHENTICATED;
  }

  let searchFound = null;
  if (vectorAddress) searchFound = await waitForSearchHit(secret, env, got.id);

  let missing = null;
  try {
    await call(pages, "GetPage", { id: "0".repeat(26) }, secret);
  } catch (err) {
    missing = err.code === grpc.status.NOT_FOUND;
  }

  return {
    team_id: team.id,
    environment_id: env.id,
    page_id: got.id,
    slug: got.slug,
    title: got.title,
    metadata: fromStruct(got.metadata),
    sections: got.sections.map((s) => ({
      position: s.position,
      definition_name: s.definition_name,
      content: fromStruct(s.content),
    })),
    unauthenticated_without_key: unauthenticated,
    search_found_page: searchFound,
    not_found_for_unknown_id: missing,
  };
}

main()
  .then((summary) => {
    process.stdout.write(JSON.stringify(summary) + "\n");
    tenancy.close();
    pages.close();
  })
  .catch((err) => {
    console.error(err && err.stack ? err.stack : err);
    if (err && err.code !== undefined) console.error(`grpc code ${err.code}: ${err.details}`);
    process.exit(1);
  });
