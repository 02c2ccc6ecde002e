/**
 * Tensors in and out of OIP v2 inference: typed arrays, JSON `data` and Triton's binary
 * tensor data extension (raw little-endian bytes after a JSON header; a BYTES element is a
 * 4-byte little-endian length and its bytes).
 */
import type { components } from "./schema.js";

export type Datatype = components["schemas"]["RequestInput"]["datatype"];

/** The arrays a tensor's elements may come in. */
export type TensorData =
  | Float32Array
  | Float64Array
  | Int8Array
  | Int16Array
  | Int32Array
  | BigInt64Array
  | Uint8Array
  | Uint16Array
  | Uint32Array
  | BigUint64Array
  | number[]
  | bigint[]
  | boolean[]
  | (string | Uint8Array)[];

/** One input: flat elements in row-major order, its shape and (optional) datatype. */
export interface Tensor {
  data: TensorData;
  shape: number[];
  /** Needed for plain number arrays; else follows the array (Float32Array: FP32, ...). */
  datatype?: Datatype;
}

/** An output: FP16 and BF16 arrive as Float32Array, BOOL as boolean[], BYTES as Uint8Array[]. */
export type OutputData =
  | Float32Array
  | Float64Array
  | Int8Array
  | Int16Array
  | Int32Array
  | BigInt64Array
  | Uint8Array
  | Uint16Array
  | Uint32Array
  | BigUint64Array
  | boolean[]
  | Uint8Array[];

export interface OutputTensor {
  data: OutputData;
  shape: number[];
  datatype: Datatype;
}

type NumericArray = Exclude<TensorData, number[] | bigint[] | boolean[] | (string | Uint8Array)[]>;
interface ArrayKind {
  new (length: number): NumericArray;
  new (buffer: ArrayBuffer, offset: number, length: number): NumericArray;
  BYTES_PER_ELEMENT: number;
}

const ARRAYS: Partial<Record<Datatype, ArrayKind>> = {
  FP32: Float32Array,
  FP64: Float64Array,
  INT8: Int8Array,
  INT16: Int16Array,
  INT32: Int32Array,
  INT64: BigInt64Array,
  UINT8: Uint8Array,
  UINT16: Uint16Array,
  UINT32: Uint32Array,
  UINT64: BigUint64Array,
};
const BIG_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 0;
const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

/** The datatype of an input, from its `datatype` or its array. */
export function datatypeOf(tensor: Tensor): Datatype {
  if (tensor.datatype !== undefined) return tensor.datatype;
  const data = tensor.data;
  for (const [name, kind] of Object.entries(ARRAYS)) {
    if (data instanceof kind) return name as Datatype;
  }
  const first = (data as unknown[])[0];
  if (typeof first === "boolean") return "BOOL";
  if (typeof first === "string" || first instanceof Uint8Array) return "BYTES";
  if (typeof first === "bigint") return "INT64";
  throw new TypeError("a tensor of plain numbers (or an empty one) needs its datatype");
}

function elementCount(shape: number[]): number {
  return shape.reduce((n, d) => n * d, 1);
}

function checkCount(name: string, tensor: Tensor): void {
  const want = elementCount(tensor.shape);
  if (tensor.data.length !== want) {
    throw new RangeError(
      `input '${name}' has ${tensor.data.length} elements, shape [${tensor.shape}] needs ${want}`,
    );
  }
}

function bytesOf(element: string | Uint8Array): Uint8Array {
  return typeof element === "string" ? utf8.encode(element) : element;
}

/** The tensor's elements as raw little-endian bytes (the binary extension's layout). */
export function encodeTensor(datatype: Datatype, data: TensorData): Uint8Array {
  if (datatype === "BYTES") {
    const parts = (data as (string | Uint8Array)[]).map(bytesOf);
    const out = new Uint8Array(parts.reduce((n, p) => n + 4 + p.length, 0));
    const view = new DataView(out.buffer);
    let offset = 0;
    for (const part of parts) {
      view.setUint32(offset, part.length, true);
      out.set(part, offset + 4);
      offset += 4 + part.length;
    }
    return out;
  }
  if (datatype === "BOOL") return Uint8Array.from(data as ArrayLike<unknown>, (v) => (v ? 1 : 0));
  const kind = ARRAYS[datatype];
  if (kind === undefined) throw new TypeError(`${datatype} cannot travel as binary data`);
  let array: NumericArray;
  if (data instanceof kind) array = data as NumericArray;
  else {
    array = new kind(data.length);
    const big = datatype === "INT64" || datatype === "UINT64";
    (data as unknown[]).forEach((v, i) => {
      (array as unknown as unknown[])[i] = big ? BigInt(v as number | bigint) : Number(v);
    });
  }
  if (BIG_ENDIAN) throw new Error("binary tensor data needs a little-endian host: use binary: false");
  return new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
}

/** The elements of an input as JSON `data` (INT64 beyond 2**53 loses precision: use binary). */
export function jsonData(datatype: Datatype, data: TensorData): unknown[] {
  if (datatype === "BYTES") {
    return (data as (string | Uint8Array)[]).map((v) =>
      typeof v === "string" ? v : fromUtf8.decode(v),
    );
  }
  const out = Array.from(data as ArrayLike<number | bigint | boolean>, (v) =>
    typeof v === "bigint" ? Number(v) : v,
  );
  if (out.some((v) => typeof v === "number" && !Number.isFinite(v))) {
    throw new RangeError("NaN and infinity are not JSON numbers: send them with binary: true");
  }
  return out;
}

function halfToFloat(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * 2 ** -14 * (fraction / 1024);
  if (exponent === 0x1f) return fraction ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
}

/** An output's raw little-endian bytes as an array. */
export function decodeTensor(datatype: Datatype, shape: number[], raw: Uint8Array): OutputData {
  const count = elementCount(shape);
  if (datatype === "BYTES") {
    const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    const out: Uint8Array[] = [];
    let offset = 0;
    while (offset < raw.length) {
      if (offset + 4 > raw.length) throw new RangeError("a BYTES element runs past its tensor");
      const length = view.getUint32(offset, true);
      if (offset + 4 + length > raw.length) throw new RangeError("a BYTES element runs past its tensor");
      out.push(raw.slice(offset + 4, offset + 4 + length));
      offset += 4 + length;
    }
    if (out.length !== count) throw new RangeError(`${out.length} BYTES elements, shape [${shape}] needs ${count}`);
    return out;
  }
  if (datatype === "BOOL") {
    if (raw.length !== count) throw new RangeError(`${raw.length} BOOL elements, shape [${shape}] needs ${count}`);
    return Array.from(raw, (b) => b !== 0);
  }
  const copy = raw.slice(); // aligned, and the caller's to keep
  if (datatype === "FP16" || datatype === "BF16") {
    if (copy.length !== count * 2) throw new RangeError(`${copy.length} bytes cannot hold ${count} ${datatype} elements`);
    const bits = new Uint16Array(copy.buffer, 0, count);
    return datatype === "FP16"
      ? Float32Array.from(bits, halfToFloat)
      : new Float32Array(Uint32Array.from(bits, (b) => b << 16).buffer);
  }
  const kind = ARRAYS[datatype];
  if (kind === undefined) throw new TypeError(`unknown datatype ${datatype}`);
  if (copy.length !== count * kind.BYTES_PER_ELEMENT) {
    throw new RangeError(`${copy.length} bytes cannot hold ${count} ${datatype} elements`);
  }
  return new kind(copy.buffer, 0, count);
}

/** An output's JSON `data` as an array of its datatype. */
export function fromJson(datatype: Datatype, data: unknown[]): OutputData {
  const flat = (data as unknown[]).flat(Number.POSITIVE_INFINITY);
  if (datatype === "BYTES") return flat.map((v) => utf8.encode(String(v)));
  if (datatype === "BOOL") return flat.map((v) => Boolean(v));
  if (datatype === "FP16" || datatype === "BF16") return Float32Array.from(flat as number[]);
  const kind = ARRAYS[datatype];
  if (kind === undefined) throw new TypeError(`unknown datatype ${datatype}`);
  const out = new kind(flat.length);
  const big = datatype === "INT64" || datatype === "UINT64";
  flat.forEach((v, i) => {
    (out as unknown as unknown[])[i] = big ? BigInt(v as number) : Number(v);
  });
  return out;
}

export interface EncodeOptions {
  outputs?: string[] | undefined;
  binary: boolean;
  requestId?: string | undefined;
  parameters?: Record<string, unknown> | undefined;
}

/** An inference body and, when it carries binary data, its JSON header's length. */
export function encodeRequest(
  inputs: Record<string, Tensor>,
  options: EncodeOptions,
): { body: Uint8Array<ArrayBuffer>; headerLength: number | undefined } {
  const names = Object.keys(inputs);
  if (names.length === 0) throw new TypeError("inputs must name at least one tensor");
  const entries: Record<string, unknown>[] = [];
  const chunks: Uint8Array[] = [];
  for (const name of names) {
    const tensor = inputs[name] as Tensor;
    checkCount(name, tensor);
    const datatype = datatypeOf(tensor);
    const entry: Record<string, unknown> = { name, datatype, shape: tensor.shape };
    // FP16 and BF16 go as JSON numbers even in a binary request (the extension allows mixing)
    if (options.binary && datatype !== "FP16" && datatype !== "BF16") {
      const raw = encodeTensor(datatype, tensor.data);
      entry.parameters = { binary_data_size: raw.length };
      chunks.push(raw);
    } else {
      entry.data = jsonData(datatype, tensor.data);
    }
    entries.push(entry);
  }
  const doc: Record<string, unknown> = { inputs: entries };
  if (options.requestId !== undefined) doc.id = options.requestId;
  const parameters: Record<string, unknown> = { ...(options.parameters ?? {}) };
  if (options.outputs !== undefined) {
    doc.outputs = options.outputs.map((name) =>
      options.binary ? { name, parameters: { binary_data: true } } : { name },
    );
  } else if (options.binary) {
    parameters.binary_data_output = true;
  }
  if (Object.keys(parameters).length > 0) doc.parameters = parameters;
  const header = utf8.encode(JSON.stringify(doc));
  if (chunks.length === 0) return { body: header, headerLength: undefined };
  const body = new Uint8Array(header.length + chunks.reduce((n, c) => n + c.length, 0));
  body.set(header, 0);
  let offset = header.length;
  for (const chunk of chunks) {
    body.set(chunk, offset);
    offset += chunk.length;
  }
  return { body, headerLength: header.length };
}

export interface DecodedResponse {
  doc: components["schemas"]["InferenceResponse"];
  outputs: Record<string, OutputTensor>;
}

/** An inference answer (`headerLength`: its Inference-Header-Content-Length, if any). */
export function decodeResponse(content: Uint8Array, headerLength: number | undefined): DecodedResponse {
  let header: Uint8Array = content;
  let binary: Uint8Array = new Uint8Array(0);
  if (headerLength !== undefined) {
    if (!(headerLength > 0 && headerLength <= content.length)) {
      throw new RangeError(`Inference-Header-Content-Length ${headerLength} is wrong`);
    }
    header = content.subarray(0, headerLength);
    binary = content.subarray(headerLength);
  }
  const doc = JSON.parse(fromUtf8.decode(header)) as components["schemas"]["InferenceResponse"];
  const outputs: Record<string, OutputTensor> = {};
  let offset = 0;
  for (const entry of doc.outputs ?? []) {
    const size = entry.parameters?.binary_data_size;
    let data: OutputData;
    if (typeof size === "number") {
      if (offset + size > binary.length) {
        throw new RangeError(`output '${entry.name}' runs past the answer's binary data`);
      }
      data = decodeTensor(entry.datatype, entry.shape, binary.subarray(offset, offset + size));
      offset += size;
    } else {
      data = fromJson(entry.datatype, entry.data ?? []);
    }
    outputs[entry.name] = { data, shape: entry.shape, datatype: entry.datatype };
  }
  return { doc, outputs };
}
