// The client against a real modelgate process (tests/sdk/test_typescript_sdk.py starts it and
// sets MODELGATE_TEST_*): every operation as a user calls it, answers checked against the
// server's own JSON answers or against each other. Skipped when no server is given.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import * as mg from "../dist/index.js";

const env = process.env;
const url = env.MODELGATE_TEST_URL;
const skip = url ? false : "no server: run tests/sdk/test_typescript_sdk.py";
const RISK = "credit-risk";
const MINILM = "all-MiniLM-L6-v2";
const ROWS = [
  [2, 52000, 0.31, 0.42, 36, 5, 0, 12000, 36, 9, 1, 1],
  [0, 18000, 0.65, 0.93, 3, 1, 2, 30000, 60, 1, 6, 0],
];
const features = { data: new Float32Array(ROWS.flat()), shape: [2, 12] };

function admin(options = {}) {
  return new mg.Client(url, { apiKey: env.MODELGATE_TEST_ADMIN_KEY, ...options });
}

async function rawJsonInfer(model, inputs) {
  const answer = await fetch(`${url}/v2/models/${model}/infer`, {
    method: "POST",
    headers: { authorization: `Bearer ${env.MODELGATE_TEST_ADMIN_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ inputs }),
  });
  assert.equal(answer.status, 200, await answer.clone().text());
  return Object.fromEntries((await answer.json()).outputs.map((o) => [o.name, o.data.flat(Infinity)]));
}

function close(a, b, tolerance = 1e-6) {
  assert.equal(a.length, b.length);
  for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - b[i]) <= tolerance * Math.max(1, Math.abs(b[i])), `${a[i]} != ${b[i]}`);
}

describe("against a real server", { skip }, () => {
  test("health, metadata and models", async () => {
    const client = admin();
    assert.equal(await client.isLive(), true);
    assert.equal(await client.isReady(), true);
    assert.ok((await client.serverMetadata()).extensions.includes("binary_tensor_data"));
    const ids = (await client.models()).map((m) => m.id);
    assert.ok(ids.includes(RISK) && ids.includes(MINILM));
    const meta = await client.modelMetadata(RISK);
    assert.deepEqual(meta.versions, ["1", "2"]);
    assert.deepEqual(meta.inputs[0].shape, [-1, 12]);
    assert.equal(await client.modelReady(RISK, 1), true);
    await assert.rejects(client.modelMetadata("no-such-model"), mg.NotFoundError);
  });

  test("binary and JSON inference agree with the server's JSON", async () => {
    const sent = [];
    const recording = (input, init) => {
      sent.push(init.headers);
      return fetch(input, init);
    };
    const client = admin({ fetch: recording });
    const binary = await client.infer(RISK, { features });
    const asJson = await client.infer(RISK, { features }, { binary: false, outputs: ["probabilities"] });
    assert.equal(sent[0]["Content-Type"], "application/octet-stream");
    assert.equal(sent[1]["Content-Type"], "application/json");
    const expected = await rawJsonInfer(RISK, [{ name: "features", datatype: "FP32", shape: [2, 12], data: ROWS.flat() }]);
    assert.ok(binary.get("probabilities") instanceof Float32Array);
    assert.ok(binary.get("label") instanceof BigInt64Array);
    assert.deepEqual(binary.outputs.probabilities.shape, [2, 2]);
    close(binary.get("probabilities"), expected.probabilities);
    assert.deepEqual([...binary.get("label")].map(Number), expected.label);
    assert.deepEqual(asJson.get("probabilities"), binary.get("probabilities"));
    assert.deepEqual(Object.keys(asJson.outputs), ["probabilities"]);
    assert.equal(binary.modelVersion, "2");
    assert.ok(binary.requestId);
  });

  test("explain answers attributions that add up to the log-odds", async () => {
    const client = admin();
    for (const [version, method] of [[1, "linear"], [2, "kernel_shap"]]) {
      const result = await client.infer(RISK, { features }, { version, explain: true });
      const explanation = result.explanation;
      assert.equal(explanation.method, method);
      assert.deepEqual([explanation.output, explanation.target, explanation.link], ["probabilities", "default", "logit"]);
      const p = result.get("probabilities");
      explanation.attributions.forEach((row, r) => {
        assert.equal(row.length, 12);
        const total = explanation.baseValue + row.reduce((a, b) => a + b, 0);
        const q = p[2 * r + 1];
        assert.ok(Math.abs(total - Math.log(q / (1 - q))) < 1e-3, `row ${r}: ${total}`);
      });
    }
    assert.equal((await client.infer(RISK, { features })).explanation, undefined);
    await assert.rejects(
      client.infer(MINILM, { text: { data: ["hello"], shape: [1] } }, { explain: true }),
      mg.BadRequestError,
    );
  });

  test("BYTES tensors and embeddings agree", async () => {
    const client = admin();
    const texts = ["the cat sat on the mat", "modelgate serves models", "héllo wörld"];
    const result = await client.infer(MINILM, { text: { data: texts, shape: [3] } }, { outputs: ["embedding"] });
    assert.deepEqual(result.outputs.embedding.shape, [3, 384]);
    const found = await client.embeddings(MINILM, texts);
    assert.equal(found.data.length, 3);
    const got = result.get("embedding");
    for (const item of found.data) {
      close(got.subarray(item.index * 384, (item.index + 1) * 384), item.embedding, 1e-4);
    }
    assert.ok(found.usage.prompt_tokens > texts.length);
  });

  test("jobs: submit with a key, wait with progress, results page by page", async () => {
    const client = admin();
    const requests = [0, 1].map((i) => mg.jobRequest({ features: { data: new Float32Array(ROWS[i]), shape: [1, 12] } }));
    const key = `ts-order-${Date.now()}-${Math.random()}`;
    const job = await client.jobs.submit(RISK, requests, { version: 2, idempotencyKey: key });
    const again = await client.jobs.submit(RISK, requests, { version: 2, idempotencyKey: key });
    assert.equal(again.id, job.id);
    assert.equal(job.progress.total, 2);
    const seen = [];
    const done = await client.jobs.wait(job.id, { timeout: 120, pollInterval: 0.2, onProgress: (j) => seen.push(j) });
    assert.equal(done.status, "succeeded");
    assert.equal(seen.at(-1).status, "succeeded");
    const results = [];
    for await (const item of client.jobs.results(job.id, { pageSize: 1 })) results.push(item);
    assert.deepEqual(results.map((r) => [r.index, r.status]), [[0, "ok"], [1, "ok"]]);
    const synchronous = await client.infer(RISK, { features }, { version: 2 });
    for (const result of results) {
      const output = result.response.outputs.find((o) => o.name === "probabilities");
      close(output.data.flat(), synchronous.get("probabilities").subarray(result.index * 2, result.index * 2 + 2));
    }
    const listed = await client.jobs.list({ model: RISK, limit: 100 });
    assert.ok(listed.data.some((j) => j.id === job.id));
    await assert.rejects(client.jobs.get("job_does_not_exist"), mg.NotFoundError);
  });

  test("feedback labels an earlier prediction", async () => {
    const client = admin();
    const prediction = await client.infer(RISK, { features });
    assert.equal(await client.feedback({ request_id: prediction.requestId, labels: [0, 1] }), 2);
    await assert.rejects(client.feedback({ request_id: prediction.requestId, labels: [-1, 0] }), (e) => e instanceof mg.BadRequestError && /label/.test(e.detail));
  });

  test("a tenant sees its own usage and quotas, and no deployment", async () => {
    const client = new mg.Client(url, { apiKey: env.MODELGATE_TEST_TENANT_KEY });
    for (let i = 0; i < 3; i++) await client.infer(RISK, { features });
    const total = (report) => report.rows.reduce((n, r) => n + r.requests, 0);
    const deadline = Date.now() + 30_000; // usage is written in the background, each second
    let report = await client.usage({ groupBy: "tenant,model" });
    while (total(report) < 3 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 300));
      report = await client.usage({ groupBy: "tenant,model" });
    }
    assert.equal(total(report), 3);
    assert.deepEqual(report.rows.map((r) => [r.tenant_id, r.model]), [[env.MODELGATE_TEST_TENANT_ID, RISK]]);
    const quotas = Object.fromEntries((await client.quotas(env.MODELGATE_TEST_TENANT_ID)).map((q) => [q.quota, q]));
    assert.equal(quotas.requests_per_day.limit, 1000);
    assert.equal(quotas.requests_per_day.used + quotas.requests_per_day.remaining, 1000);
    await assert.rejects(client.deployments.get(RISK), mg.PermissionDeniedError);
  });

  test("rate limits throw with retryAfter, or are waited out", async () => {
    const limited = env.MODELGATE_TEST_LIMITED_KEY;
    const once = new mg.Client(url, { apiKey: limited, retry: mg.NO_RETRY });
    await once.infer(RISK, { features });
    const error = await once.infer(RISK, { features }).catch((e) => e);
    assert.ok(error instanceof mg.RateLimitError, String(error));
    assert.equal(error.status, 429);
    assert.ok(error.retryAfter >= 1);
    const statuses = [];
    const recording = async (input, init) => {
      const answer = await fetch(input, init);
      statuses.push(answer.status);
      return answer;
    };
    const patient = new mg.Client(url, { apiKey: limited, fetch: recording });
    for (let i = 0; i < 2; i++) assert.equal((await patient.infer(RISK, { features })).get("label").length, 2);
    assert.ok(statuses.includes(429) && statuses.at(-1) === 200 && statuses.length > 2, String(statuses));
  });

  test("errors from the server, in each shape", async () => {
    const stranger = new mg.Client(url, { apiKey: "not-a-key" });
    const denied = await stranger.infer(RISK, { features }).catch((e) => e);
    assert.ok(denied instanceof mg.AuthenticationError && denied.status === 401);
    const client = admin();
    const bad = await client.infer(RISK, { features: { data: new Float32Array(6), shape: [2, 3] } }).catch((e) => e);
    assert.ok(bad instanceof mg.BadRequestError && /features/.test(bad.detail), String(bad));
    assert.ok(bad.requestId);
    await assert.rejects(client.infer("no-such-model", { x: { data: new Float32Array(1), shape: [1] } }), mg.NotFoundError);
    const openai = await client.embeddings("no-such-model", "hi").catch((e) => e);
    assert.ok(openai instanceof mg.NotFoundError);
    assert.equal(openai.code, "model_not_found");
    const fastapi = await client.send({ method: "POST", path: "/admin/plans", json: {} }).catch((e) => e);
    assert.ok(fastapi instanceof mg.BadRequestError && fastapi.status === 422, String(fastapi));
    assert.equal(fastapi.code, "validation_error");
  });

  test("deployments: split, promote and roll back", async () => {
    const client = admin();
    try {
      const split = await client.deployments.put(RISK, { default_version: 2, split: [{ version: 1, weight: 20 }, { version: 2, weight: 80 }] });
      assert.equal(split.stage, "split");
      assert.deepEqual(new Set(split.weights.map((w) => w.version)), new Set([1, 2]));
      assert.equal((await client.deployments.get(RISK)).revision, split.revision);
      assert.deepEqual((await client.deployments.rollback(RISK)).weights, [{ version: 2, percent: 100, role: "default" }]);
      assert.equal((await client.deployments.promote(RISK, 1)).default_version, 1);
      assert.equal((await client.infer(RISK, { features })).modelVersion, "1");
      await assert.rejects(client.deployments.put(RISK, { default_version: 2, split: [{ version: 1, weight: 50 }] }), (e) => e instanceof mg.BadRequestError && /sum to 100/.test(e.detail));
    } finally {
      await client.deployments.put(RISK, { default_version: 2 });
    }
  });
});
