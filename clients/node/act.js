// Ask inspo-runtime for actions from Node.js, loading the .proto files as they are (no code generation).
//   cd clients/node && npm install && node act.js 127.0.0.1:50051 grid tl_0 6
// Prints the ActResponse as JSON. POLICY_TOKEN (optional) is sent as "authorization: Bearer <token>".
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const [target = "127.0.0.1:50051", model = "grid", agent = "tl_0", obsDim = "6"] = process.argv.slice(2);
const definition = protoLoader.loadSync("inspo/runtime/v1/policy.proto", {
  includeDirs: [path.join(__dirname, "..", "..", "protos")],
  keepCase: true, // field names as in the .proto: agent_id, model_version, ...
  defaults: true,
});
const { PolicyService } = grpc.loadPackageDefinition(definition).inspo.runtime.v1;
const client = new PolicyService(target, grpc.credentials.createInsecure());

const metadata = new grpc.Metadata();
if (process.env.POLICY_TOKEN) metadata.set("authorization", `Bearer ${process.env.POLICY_TOKEN}`);
const request = {
  model,
  deterministic: true,
  agents: [{ agent_id: agent, obs: new Array(Number(obsDim)).fill(0) }],
};
client.Act(request, metadata, { deadline: Date.now() + 5000 }, (err, response) => {
  if (err) {
    // err.code is the gRPC status (3 INVALID_ARGUMENT, 5 NOT_FOUND, ...), err.details says which field.
    console.error(`Act failed: ${grpc.status[err.code]}: ${err.details}`);
    process.exit(1);
  }
  console.log(JSON.stringify(response));
  client.close();
});
