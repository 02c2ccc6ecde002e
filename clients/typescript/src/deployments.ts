/** A model's deployment (`client.deployments`, docs/deployments.md). */
import { type Call, type CallOptions, type Sender, newIdempotencyKey, segment } from "./call.js";
import type { components, operations } from "./schema.js";

/** The document says no more of a deployment than an object (its `stage`, `weights`, ...). */
export type Deployment = operations["getDeployment"]["responses"][200]["content"]["application/json"];
export type DeploymentSpec = components["schemas"]["DeploymentBody"];

/** A model's deployment: versions, traffic split, canary, shadow (`client.deployments`; an
 * operator's key, scope `tenants:admin`). */
export class Deployments {
  constructor(private readonly client: Sender) {}

  private path(model: string): string {
    return `/admin/models/${segment(model)}/deployment`;
  }

  /** The model's deployment (NotFoundError when it has none). */
  async get(model: string, options: CallOptions = {}): Promise<Deployment> {
    return (await this.client.send({ method: "GET", path: this.path(model) }, options)).json() as Promise<Deployment>;
  }

  /** Replace the deployment: a `split` summing to 100, or a `canary`, and a `shadow`. */
  async put(model: string, spec: DeploymentSpec, options: CallOptions = {}): Promise<Deployment> {
    const json = { split: [], canary: null, shadow: null, ...spec };
    return (await this.client.send({ method: "PUT", path: this.path(model), json }, options)).json() as Promise<Deployment>;
  }

  /** Make the canary (or `version`) the default. */
  async promote(model: string, version?: number, options: CallOptions & { idempotencyKey?: string } = {}): Promise<Deployment> {
    return this.action(model, "promote", version === undefined ? undefined : { version }, options);
  }

  /** End the split or canary: the default version takes all traffic again. */
  async rollback(model: string, options: CallOptions & { idempotencyKey?: string } = {}): Promise<Deployment> {
    return this.action(model, "rollback", undefined, options);
  }

  private async action(model: string, action: string, json: unknown, options: CallOptions & { idempotencyKey?: string }): Promise<Deployment> {
    const headers = { "Idempotency-Key": options.idempotencyKey ?? newIdempotencyKey() };
    const call: Call = { method: "POST", path: `${this.path(model)}/${action}`, json, headers };
    return (await this.client.send(call, options)).json() as Promise<Deployment>;
  }
}
