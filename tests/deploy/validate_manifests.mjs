// Checks the Kubernetes objects that deploy/overlays/{cpu,gpu} render to (tests/deploy/validate_manifests.sh
// renders them, with every kubectl it finds, and runs promtool on the files this script writes).
//
//   node validate_manifests.mjs --repo=DIR --work=DIR cpu=RENDER[,RENDER...] gpu=RENDER[,RENDER...]
//
// 1. Renders of one overlay by different kustomize versions hold the same objects (compared after removing
//    what legitimately differs: document order, the generated ConfigMap's hash suffix, empty metadata maps).
// 2. Every object validates against its schema: Kubernetes objects with kubernetes-models, ServiceMonitor and
//    PrometheusRule with @kubernetes-models/prometheus-operator. The schemas allow unknown fields, so fields
//    the validator never looked at are reported too (a misspelt `readinesProbe` would otherwise pass).
// 3. The project's rules: probes, drain timing, security context, resources, GPU scheduling, Services, PDB,
//    HPA against the prometheus-adapter rules, ServiceMonitor selection (the list below, check by check).
// 4. Writes WORK/alerts.rules.json (the PrometheusRule's spec) and WORK/adapter.rules.json (the adapter's
//    queries as recording rules, placeholders filled in) for `promtool check rules` / `promtool test rules`.
// Prints one line per check and "N passed, M failed"; exits 1 if any failed.

import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import YAML from "yaml";

const here = path.dirname(fileURLToPath(import.meta.url));
const args = Object.fromEntries(
  process.argv.slice(2).map((a) => {
    const m = /^(?:--)?([^=]+)=(.*)$/.exec(a);
    if (!m) throw new Error(`bad argument ${a}`);
    return [m[1], m[2]];
  }),
);
const repo = args.repo;
const work = args.work;
const overlays = Object.keys(args).filter((k) => k !== "repo" && k !== "work");

let passed = 0;
let failed = 0;
function check(name, ok, detail = "") {
  if (ok) {
    passed++;
    console.log(`ok - ${name}`);
  } else {
    failed++;
    console.log(`not ok - ${name}${detail ? `: ${detail}` : ""}`);
  }
  return ok;
}

function loadAll(file) {
  return YAML.parseAllDocuments(fs.readFileSync(file, "utf8"))
    .map((d) => {
      if (d.errors.length) throw new Error(`${file}: ${d.errors[0].message}`);
      return d.toJS();
    })
    .filter((o) => o != null);
}

// ---- 1. the same objects from every kustomize version ----------------------------------------------------

const kHash = /(clipserve-config)-[a-z0-9]{10}\b/g;
function normalise(objects) {
  const out = {};
  for (const o of objects) {
    const copy = JSON.parse(JSON.stringify(o).replace(kHash, "$1-HASH"));
    for (const key of ["labels", "annotations"]) {
      const m = copy.metadata?.[key];
      if (m && Object.keys(m).length === 0) delete copy.metadata[key];
    }
    out[`${copy.kind}/${copy.metadata?.name}`] = copy;
  }
  return out;
}
function stable(x) {
  if (Array.isArray(x)) return x.map(stable);
  if (x && typeof x === "object") {
    return Object.fromEntries(Object.keys(x).sort().map((k) => [k, stable(x[k])]));
  }
  return x;
}

// ---- 2. schemas -------------------------------------------------------------------------------------------

async function modelFor(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const file =
    group === "monitoring.coreos.com"
      ? `@kubernetes-models/prometheus-operator/${group}/${version}/${kind}.mjs`
      : `kubernetes-models/${group ? `${group}/` : ""}${version}/${kind}.mjs`;
  const full = path.join(here, "node_modules", file);
  if (!fs.existsSync(full)) return null;
  return (await import(full))[kind];
}

// Wraps `value` so that every property the validator reads is recorded. A validator reads each property its
// schema defines and enumerates the keys of maps (labels, resources), so an object key that was neither read
// nor enumerated is not in the schema.
function tracked(value, seen, where = "", proxies = new WeakMap()) {
  if (!value || typeof value !== "object") return value;
  if (proxies.has(value)) return proxies.get(value);
  const record = { read: new Set(), enumerated: false, value, where };
  seen.push(record);
  const proxy = new Proxy(value, {
    get(target, key, receiver) {
      if (typeof key === "string") record.read.add(key);
      const v = Reflect.get(target, key, receiver);
      return typeof key === "string" && Object.prototype.hasOwnProperty.call(target, key)
        ? tracked(v, seen, `${where}/${key}`, proxies)
        : v;
    },
    ownKeys(target) {
      record.enumerated = true;
      return Reflect.ownKeys(target);
    },
  });
  proxies.set(value, proxy);
  return proxy;
}
function unknownFields(seen) {
  const unknown = [];
  for (const r of seen) {
    if (r.enumerated || Array.isArray(r.value)) continue;
    for (const k of Object.keys(r.value)) if (!r.read.has(k)) unknown.push(`${r.where}/${k}`);
  }
  return unknown;
}

async function validateSchema(o, label) {
  const Model = await modelFor(o.apiVersion, o.kind);
  if (!check(`${label}: a schema exists for ${o.apiVersion} ${o.kind}`, Model != null)) return;
  let error = "";
  const seen = [];
  try {
    const model = new Model(JSON.parse(JSON.stringify(o)));
    // Validate through a recording proxy of the plain object (Model.validate validates `this`).
    Model.prototype.validate.call(tracked(model.toJSON(), seen));
  } catch (e) {
    error = e.message;
  }
  if (!check(`${label}: valid ${o.kind}`, error === "", error)) return;
  const unknown = unknownFields(seen);
  check(`${label}: no fields outside the ${o.kind} schema`, unknown.length === 0, unknown.join(", "));
}

// ---- 3. the project's rules ---------------------------------------------------------------------------------

const textprotoField = (text, field) => {
  const m = new RegExp(`^\\s*${field}\\s*:\\s*"?([^"\\s#]+)"?`, "m").exec(text);
  return m ? m[1] : undefined;
};
const cpuCores = (q) => (String(q).endsWith("m") ? parseInt(q, 10) / 1000 : Number(q));
const matches = (selector, labels) => Object.entries(selector ?? {}).every(([k, v]) => labels?.[k] === v);

function checkOverlay(name, objects, adapterMetrics) {
  const byKind = (kind) => objects.filter((o) => o.kind === kind);
  const one = (kind, n) => byKind(kind).find((o) => o.metadata.name === n);
  const label = (s) => `${name}: ${s}`;

  const dep = one("Deployment", "clipserve");
  if (!check(label("renders Deployment clipserve"), dep != null)) return;
  const pod = dep.spec.template;
  const podLabels = pod.metadata.labels;
  const c = pod.spec.containers.find((x) => x.name === "clipserve");
  if (!check(label("Deployment has a container named clipserve"), c != null)) return;

  // Image: a tag, never latest; cuda image on GPU.
  const tag = /:([^/:@]+)$/.exec(c.image)?.[1];
  check(label(`image ${c.image} has an explicit tag that is not latest`), tag && tag !== "latest");
  check(label(`image tag is ${name === "gpu" ? "cuda" : "cpu"}`), tag === (name === "gpu" ? "cuda" : "cpu"));
  check(label("Deployment leaves replicas to the HPA"), dep.spec.replicas === undefined);

  // Probes: native gRPC on 8500; readiness and startup on clipserve.v1.Clip.
  for (const p of ["startupProbe", "readinessProbe", "livenessProbe"]) {
    check(label(`${p} is a gRPC probe on port 8500`), c[p]?.grpc?.port === 8500);
  }
  check(label("readinessProbe asks for clipserve.v1.Clip"), c.readinessProbe?.grpc?.service === "clipserve.v1.Clip");
  check(label("startupProbe asks for clipserve.v1.Clip"), c.startupProbe?.grpc?.service === "clipserve.v1.Clip");
  check(
    label("startupProbe allows at least 2 minutes to load"),
    (c.startupProbe?.periodSeconds ?? 10) * (c.startupProbe?.failureThreshold ?? 3) >= 120,
  );

  // Config: mounted from a rendered ConfigMap at /etc/clipserve, the file the container's args name.
  const configVolume = pod.spec.volumes.find((v) => v.configMap);
  const cm = configVolume && one("ConfigMap", configVolume.configMap.name);
  check(label("the config volume names a rendered ConfigMap"), cm != null, configVolume?.configMap?.name);
  const mount = c.volumeMounts.find((m) => m.name === configVolume?.name);
  check(label("the ConfigMap is mounted at /etc/clipserve"), mount?.mountPath === "/etc/clipserve");
  check(label("args select /etc/clipserve/clipserve.textproto"), c.args?.includes("--config=/etc/clipserve/clipserve.textproto"));
  const config = cm?.data?.["clipserve.textproto"] ?? "";
  check(label("the ConfigMap holds clipserve.textproto"), config.length > 0);
  const expectedConfig = fs.readFileSync(
    path.join(repo, name === "gpu" ? "deploy/overlays/gpu/clipserve.textproto" : "deploy/base/clipserve.textproto"),
    "utf8",
  );
  check(label("the ConfigMap is the overlay's config file"), config === expectedConfig);
  check(label("config serves gRPC on 8500 and HTTP on 8501"), textprotoField(config, "grpc_port") === "8500" && textprotoField(config, "http_port") === "8501");
  check(label("config's model paths are absolute (the image's /opt/clipserve/models)"),
    [...config.matchAll(/^\s*(?:path|vqgan_path)\s*:\s*"([^"]*)"/gm)].every((m) => m[1].startsWith("/opt/clipserve/models/")));
  const device = textprotoField(config, "device") ?? "cpu";
  check(label(`config's model device is ${name === "gpu" ? "cuda" : "cpu"}`), name === "gpu" ? device.startsWith("cuda:") : device === "cpu");

  // Shutdown: preStop sleep, then drain_timeout_ms, inside the grace period.
  const pre = c.lifecycle?.preStop?.exec?.command ?? [];
  const sleep = pre[0]?.endsWith("sleep") ? Number(pre[1]) : NaN;
  check(label("preStop sleeps so endpoints go before SIGTERM"), sleep > 0, pre.join(" "));
  const drainS = Number(textprotoField(config, "drain_timeout_ms") ?? 20000) / 1000;
  const grace = pod.spec.terminationGracePeriodSeconds ?? 30;
  check(label(`terminationGracePeriodSeconds ${grace} > preStop ${sleep} s + drain ${drainS} s`), grace > sleep + drainS);

  // Security.
  const psc = pod.spec.securityContext ?? {};
  const csc = c.securityContext ?? {};
  check(label("runAsNonRoot with a numeric non-zero user"), psc.runAsNonRoot === true && (csc.runAsUser ?? psc.runAsUser) > 0);
  check(label("readOnlyRootFilesystem"), csc.readOnlyRootFilesystem === true);
  check(label("no privilege escalation, all capabilities dropped"),
    csc.allowPrivilegeEscalation === false && (csc.capabilities?.drop ?? []).includes("ALL"));
  check(label("/tmp is writable (emptyDir)"), c.volumeMounts.some((m) => m.mountPath === "/tmp"));

  // Resources and threads.
  const req = c.resources?.requests ?? {};
  const lim = c.resources?.limits ?? {};
  check(label("cpu and memory requests and limits are set"), req.cpu && req.memory && lim.cpu && lim.memory);
  const intra = c.env?.find((e) => e.name === "CLIPSERVE_INTRA_OP_THREADS");
  check(label("CLIPSERVE_INTRA_OP_THREADS comes from limits.cpu"), intra?.valueFrom?.resourceFieldRef?.resource === "limits.cpu");
  check(label("config leaves intra_op_threads to the environment"), Number(textprotoField(config, "intra_op_threads") ?? 0) === 0);
  check(label(`config's cpu_pool_threads equals limits.cpu (${lim.cpu})`),
    Number(textprotoField(config, "cpu_pool_threads")) === Math.ceil(cpuCores(lim.cpu)));
  if (name === "gpu") {
    check(label("one nvidia.com/gpu in limits"), String(lim["nvidia.com/gpu"]) === "1");
    check(label("tolerates the nvidia.com/gpu taint"), (pod.spec.tolerations ?? []).some((t) => t.key === "nvidia.com/gpu"));
    check(label("has a nodeSelector for GPU nodes"), Object.keys(pod.spec.nodeSelector ?? {}).length > 0);
  } else {
    check(label("asks for no GPU"), lim["nvidia.com/gpu"] === undefined && req["nvidia.com/gpu"] === undefined);
  }

  // Prometheus annotations on the pods.
  const ann = pod.metadata.annotations ?? {};
  check(label("pods carry prometheus.io scrape annotations for port 8501"),
    ann["prometheus.io/scrape"] === "true" && ann["prometheus.io/port"] === "8501" && ann["prometheus.io/path"] === "/metrics");

  // Services.
  const svc = one("Service", "clipserve");
  const headless = one("Service", "clipserve-headless");
  check(label("Service clipserve is ClusterIP"), svc && (svc.spec.type ?? "ClusterIP") === "ClusterIP" && svc.spec.clusterIP === undefined);
  const port = (s, n) => s?.spec.ports.find((p) => p.name === n);
  check(label("Service clipserve: grpc 8500 with appProtocol grpc"), port(svc, "grpc")?.port === 8500 && port(svc, "grpc")?.appProtocol === "grpc");
  check(label("Service clipserve: http 8501"), port(svc, "http")?.port === 8501);
  check(label("headless Service: clusterIP None, grpc 8500"), headless?.spec.clusterIP === "None" && port(headless, "grpc")?.port === 8500);
  for (const s of [svc, headless]) {
    if (!s) continue;
    check(label(`Service ${s.metadata.name} selects the pods`), matches(s.spec.selector, podLabels));
    for (const p of s.spec.ports) {
      check(label(`Service ${s.metadata.name} port ${p.name} targets a container port`),
        c.ports.some((cp) => cp.name === p.targetPort || cp.containerPort === p.targetPort));
    }
  }
  check(label("Deployment selector matches its pods"), matches(dep.spec.selector.matchLabels, podLabels));

  // PDB.
  const pdb = byKind("PodDisruptionBudget")[0];
  check(label("PodDisruptionBudget selects the pods"), pdb && matches(pdb.spec.selector.matchLabels, podLabels));

  // HPA: scales this Deployment on metrics the adapter serves.
  const hpa = byKind("HorizontalPodAutoscaler")[0];
  check(label("HPA is autoscaling/v2 and targets Deployment clipserve"),
    hpa?.apiVersion === "autoscaling/v2" && hpa.spec.scaleTargetRef.kind === "Deployment" && hpa.spec.scaleTargetRef.name === "clipserve");
  const podMetrics = (hpa?.spec.metrics ?? []).filter((m) => m.type === "Pods").map((m) => m.pods.metric.name);
  check(label("HPA scales on a Pods metric of queue pressure"), podMetrics.includes("clipserve_queued_rows"));
  for (const m of podMetrics) check(label(`HPA metric ${m} is served by an adapter rule`), adapterMetrics.includes(m));
  check(label("HPA minReplicas <= maxReplicas"), hpa && (hpa.spec.minReplicas ?? 1) <= hpa.spec.maxReplicas);

  // ServiceMonitor: selects exactly the ClusterIP Service, on its http port.
  const sm = one("ServiceMonitor", "clipserve");
  const selected = byKind("Service").filter((s) => matches(sm?.spec.selector.matchLabels, s.metadata.labels));
  check(label("ServiceMonitor selects only Service clipserve"), selected.length === 1 && selected[0].metadata.name === "clipserve",
    selected.map((s) => s.metadata.name).join(","));
  check(label("ServiceMonitor scrapes port http /metrics"), sm?.spec.endpoints.some((e) => e.port === "http" && (e.path ?? "/metrics") === "/metrics"));
  check(label("renders PrometheusRule clipserve"), one("PrometheusRule", "clipserve") != null);
}

// ---- adapter rules ------------------------------------------------------------------------------------------

async function loadAdapterRules() {
  const file = path.join(repo, "deploy/prometheus/adapter-rules.yaml");
  const [cm] = loadAll(file);
  await validateSchema(cm, "adapter-rules.yaml");
  const config = YAML.parse(cm.data["config.yaml"]);
  const rules = config.rules ?? [];
  check("adapter-rules.yaml: has rules", rules.length > 0);
  const recording = [];
  for (const r of rules) {
    const as = r.name?.as;
    check(`adapter rule ${as}: seriesQuery, name.matches/as and metricsQuery`, r.seriesQuery && r.name?.matches && as && r.metricsQuery);
    check(`adapter rule ${as}: maps namespace and pod labels to resources`,
      r.resources?.overrides?.namespace?.resource === "namespace" && r.resources?.overrides?.pod?.resource === "pod");
    check(`adapter rule ${as}: query uses <<.LabelMatchers>> and <<.GroupBy>>`,
      r.metricsQuery.includes("<<.LabelMatchers>>") && r.metricsQuery.includes("<<.GroupBy>>"));
    const series = /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(r.seriesQuery)?.[1];
    // The query the adapter sends for GET .../namespaces/ns/pods/*/NAME, as prometheus-adapter fills it in.
    const expr = r.metricsQuery
      .replaceAll("<<.Series>>", series)
      .replaceAll("<<.LabelMatchers>>", 'namespace="ns",pod=~"pod-a|pod-b"')
      .replaceAll("<<.GroupBy>>", "pod");
    recording.push({ record: `adapter:${as}`, expr });
  }
  fs.writeFileSync(path.join(work, "adapter.rules.json"), JSON.stringify({ groups: [{ name: "adapter", rules: recording }] }, null, 1));
  return rules.map((r) => r.name?.as);
}

// ---- main ---------------------------------------------------------------------------------------------------

fs.mkdirSync(work, { recursive: true });
const adapterMetrics = await loadAdapterRules();
let wroteAlerts = false;
for (const name of overlays) {
  const files = args[name].split(",").filter(Boolean);
  const renders = files.map(loadAll);
  check(`${name}: rendered ${renders[0].length} objects`, renders[0].length > 0, files[0]);
  const reference = normalise(renders[0]);
  for (let i = 1; i < renders.length; i++) {
    const other = normalise(renders[i]);
    const keys = [...new Set([...Object.keys(reference), ...Object.keys(other)])].sort();
    const differing = keys.filter((k) => JSON.stringify(stable(reference[k])) !== JSON.stringify(stable(other[k])));
    check(`${name}: ${path.basename(path.dirname(files[i]))} renders the same objects as ${path.basename(path.dirname(files[0]))}`,
      differing.length === 0, differing.join(", "));
  }
  for (const o of renders[0]) await validateSchema(o, `${name} ${o.kind}/${o.metadata?.name}`);
  checkOverlay(name, renders[0], adapterMetrics);
  const rule = renders[0].find((o) => o.kind === "PrometheusRule");
  if (rule && !wroteAlerts) {
    fs.writeFileSync(path.join(work, "alerts.rules.json"), JSON.stringify(rule.spec, null, 1));
    wroteAlerts = true;
  }
}
check("wrote the PrometheusRule's rules for promtool", wroteAlerts);
console.log(`validate_manifests: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
