//! The per-project objects, rendered from the operator's template
//! (`k8s/runner-template.yaml`): parsed as typed Kubernetes objects, with the
//! project's fields set structurally. No id is ever pasted into YAML text.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, EmptyDirVolumeSource, EnvFromSource, EnvVar, Pod, ProjectedVolumeSource, ResourceRequirements,
    SeccompProfile, SecretEnvSource, Service, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule, IngressServiceBackend,
    ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::projects::ProjectId;

/// The template shipped in `k8s/`, used when no other is configured.
pub const DEFAULT_TEMPLATE: &str = include_str!("../../../../k8s/runner-template.yaml");

pub const LABEL_PROJECT: &str = "cloudcode.dev/project";
pub const LABEL_OWNER: &str = "cloudcode.dev/owner";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const RUNNER_CONTAINER: &str = "runner";
pub const RUNNER_PORT: u16 = 3001;
pub const PREVIEW_PORT: u16 = 3000;

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("the runner template is not valid YAML: {0}")]
    Yaml(String),
    #[error("the runner template's {kind} is not a valid object: {error}")]
    Invalid { kind: String, error: String },
    #[error("the runner template has no {0}")]
    Missing(&'static str),
    #[error("the runner template's pod has no container named `runner`")]
    NoRunnerContainer,
    #[error("the runner template has an unexpected object of kind {0:?}")]
    UnexpectedKind(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routing {
    /// Wildcard Ingresses send every project's host to the server's
    /// gateway, which proxies to the project's Service.
    Gateway,
    /// The seed's mode: one Ingress per project with host rules for both
    /// origins.
    Ingress {
        class: Option<String>,
        ide_domain: String,
        preview_domain: String,
    },
}

/// Requests and limits for each runner pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    pub cpu_request: String,
    pub memory_request: String,
    pub cpu_limit: String,
    pub memory_limit: String,
}

impl Default for Resources {
    /// An idle project costs little: far below the seed's 500m/512Mi
    /// request, with room to burst for `npm install`.
    fn default() -> Self {
        Self {
            cpu_request: "50m".into(),
            memory_request: "96Mi".into(),
            cpu_limit: "1".into(),
            memory_limit: "1Gi".into(),
        }
    }
}

/// What every runner of this installation shares.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    pub namespace: String,
    /// This installation's name, in every object's owner label, so several
    /// installations can share a namespace and none deletes another's.
    pub owner: String,
    /// Replaces the template's image when set.
    pub image: Option<String>,
    pub resources: Resources,
    pub storage: RunnerStorage,
    pub routing: Routing,
    pub cluster_domain: String,
}

/// How runner pods reach object storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerStorage {
    /// Through this server's storage gateway at `url`, with the pod's own
    /// projected service-account token: no storage credential in the pod.
    Gateway { url: String },
    /// Straight to S3: `env` holds the non-secret settings (bucket,
    /// endpoint, region); the credentials come from the Secret named
    /// `secret_prefix` plus the project id, which the operator scopes to
    /// that project (none: workload identity).
    Direct {
        env: Vec<(String, String)>,
        secret_prefix: Option<String>,
    },
}

/// The volume the runner's terminals have as their home, apart from the
/// workspace: the template's when it mounts one by this name, else an
/// `emptyDir` at [`SANDBOX_HOME`]. The runner restores it from and keeps it
/// in storage under `home/<project>/`.
pub const HOME_VOLUME: &str = "home";
/// The runner image's user's home (`k8s/runner.Dockerfile`).
pub const SANDBOX_HOME: &str = cloudcode_proto::sandbox::HOME;
/// As large as the workspace's: package managers' caches (`~/.cache`,
/// `~/.npm`) land in the home, and a pod whose emptyDir outgrows its limit
/// is evicted at once, terminals and unsaved output with it.
const HOME_SIZE_LIMIT: &str = "2Gi";

/// Where the runner container finds its storage token (gateway storage).
pub const STORAGE_TOKEN_DIR: &str = "/var/run/secrets/cloudcode/storage";
const STORAGE_TOKEN_VOLUME: &str = "cloudcode-storage-token";
/// The kubelet renews a projected token when 80% of this has passed.
const STORAGE_TOKEN_SECONDS: i64 = 3600;

#[derive(Debug, Clone)]
pub struct Template {
    pod: Pod,
    service: Service,
    ingress: Option<Ingress>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub pod: Pod,
    pub service: Service,
    pub ingress: Option<Ingress>,
}

/// The name of every object of a project. Service names must start with a
/// letter and have at most 63 characters while project ids may start with a
/// digit and reach 63: long ids are cut and a hash keeps them apart, and
/// the two prefixes keep the two families from ever meeting.
pub fn object_name(project: &ProjectId) -> String {
    let id = project.as_str();
    if id.len() <= 61 {
        format!("p-{id}")
    } else {
        // FNV-1a: stable across releases, unlike std's hasher.
        let hash = id
            .bytes()
            .fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
        format!("q-{}-{:010x}", id[..50].trim_end_matches('-'), hash & 0xff_ffff_ffff)
    }
}

pub fn labels(project: &ProjectId, owner: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_PROJECT.to_string(), project.to_string()),
        (LABEL_OWNER.to_string(), owner.to_string()),
        (LABEL_MANAGED_BY.to_string(), "cloudcode".to_string()),
        (LABEL_COMPONENT.to_string(), "runner".to_string()),
    ])
}

/// Selects this installation's runner objects.
pub fn owner_selector(owner: &str) -> String {
    format!("{LABEL_MANAGED_BY}=cloudcode,{LABEL_OWNER}={owner}")
}

impl Template {
    pub fn parse(yaml: &str) -> Result<Self, TemplateError> {
        let (mut pod, mut service, mut ingress) = (None, None, None);
        for document in serde_yaml::Deserializer::from_str(yaml) {
            let value: serde_json::Value = serde::Deserialize::deserialize(document)
                .map_err(|e: serde_yaml::Error| TemplateError::Yaml(e.to_string()))?;
            if value.is_null() {
                continue;
            }
            let kind = value["kind"].as_str().unwrap_or_default().to_string();
            let invalid = |error: serde_json::Error| TemplateError::Invalid {
                kind: kind.clone(),
                error: error.to_string(),
            };
            match kind.as_str() {
                "Pod" => pod = Some(serde_json::from_value::<Pod>(value).map_err(invalid)?),
                "Service" => service = Some(serde_json::from_value::<Service>(value).map_err(invalid)?),
                "Ingress" => ingress = Some(serde_json::from_value::<Ingress>(value).map_err(invalid)?),
                _ => return Err(TemplateError::UnexpectedKind(kind)),
            }
        }
        let pod = pod.ok_or(TemplateError::Missing("Pod"))?;
        let has_runner = pod
            .spec
            .as_ref()
            .is_some_and(|s| s.containers.iter().any(|c| c.name == RUNNER_CONTAINER));
        if !has_runner {
            return Err(TemplateError::NoRunnerContainer);
        }
        Ok(Self {
            pod,
            service: service.ok_or(TemplateError::Missing("Service"))?,
            ingress,
        })
    }

    /// The project's pod, service and (in ingress routing) ingress. Owner
    /// references are added by [`owned_by`] once the pod exists.
    pub fn render(&self, project: &ProjectId, token_public_key: &str, settings: &RunnerSettings) -> Rendered {
        let name = object_name(project);
        let labels = labels(project, &settings.owner);
        let mut pod = self.pod.clone();
        set_metadata(&mut pod.metadata, &name, &settings.namespace, &labels);
        let spec = pod.spec.get_or_insert_with(Default::default);
        // The security floor: whatever the template says, a runner runs user
        // code and gets the restricted profile and no API access.
        spec.automount_service_account_token = Some(false);
        spec.host_network = None;
        spec.host_pid = None;
        spec.host_ipc = None;
        let pod_security = spec.security_context.get_or_insert_with(Default::default);
        pod_security.run_as_non_root = Some(true);
        pod_security.seccomp_profile = Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        });
        for container in &mut spec.containers {
            let security = container.security_context.get_or_insert_with(Default::default);
            security.allow_privilege_escalation = Some(false);
            security.privileged = Some(false);
            security.run_as_non_root = Some(true);
            security.capabilities = Some(Capabilities {
                add: None,
                drop: Some(vec!["ALL".into()]),
            });
            security.seccomp_profile = Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            });
            // Server-side apply keys ports by port and protocol; older API
            // servers do not default the protocol inside an apply.
            for port in container.ports.iter_mut().flatten() {
                port.protocol.get_or_insert_with(|| "TCP".into());
            }
            if container.name != RUNNER_CONTAINER {
                continue;
            }
            if let Some(image) = &settings.image {
                container.image = Some(image.clone());
            }
            let mounts = container.volume_mounts.get_or_insert_with(Vec::new);
            let home = match mounts.iter().find(|m| m.name == HOME_VOLUME) {
                Some(mount) => mount.mount_path.clone(),
                None => {
                    mounts.push(VolumeMount {
                        name: HOME_VOLUME.into(),
                        mount_path: SANDBOX_HOME.into(),
                        ..Default::default()
                    });
                    SANDBOX_HOME.to_owned()
                }
            };
            container.args = Some(vec![
                "--project".into(),
                project.to_string(),
                "--token-public-key".into(),
                token_public_key.into(),
                "--listen".into(),
                format!("0.0.0.0:{RUNNER_PORT}"),
                "--workspace".into(),
                cloudcode_proto::sandbox::WORKSPACE.into(),
                "--home".into(),
                home.clone(),
            ]);
            let mut storage_env = vec![("HOME".to_string(), home)];
            match &settings.storage {
                RunnerStorage::Gateway { url } => {
                    storage_env.push(("CLOUDCODE_STORAGE".to_string(), "gateway".to_string()));
                    storage_env.push(("CLOUDCODE_STORAGE_GATEWAY_URL".to_string(), url.clone()));
                    storage_env.push((
                        "CLOUDCODE_STORAGE_TOKEN_FILE".to_string(),
                        format!("{STORAGE_TOKEN_DIR}/token"),
                    ));
                    let mounts = container.volume_mounts.get_or_insert_with(Vec::new);
                    mounts.retain(|m| m.name != STORAGE_TOKEN_VOLUME);
                    mounts.push(VolumeMount {
                        name: STORAGE_TOKEN_VOLUME.into(),
                        mount_path: STORAGE_TOKEN_DIR.into(),
                        read_only: Some(true),
                        ..Default::default()
                    });
                }
                RunnerStorage::Direct { env, secret_prefix } => {
                    storage_env.extend(env.iter().cloned());
                    if let Some(prefix) = secret_prefix {
                        container.env_from.get_or_insert_with(Vec::new).push(EnvFromSource {
                            prefix: None,
                            config_map_ref: None,
                            secret_ref: Some(SecretEnvSource {
                                name: format!("{prefix}{project}"),
                                optional: Some(false),
                            }),
                        });
                    }
                }
            }
            let env = container.env.get_or_insert_with(Vec::new);
            for (key, value) in storage_env {
                env.retain(|e| e.name != key);
                env.push(EnvVar {
                    name: key,
                    value: Some(value),
                    value_from: None,
                });
            }
            let quantity = |q: &str| Quantity(q.to_string());
            container.resources = Some(ResourceRequirements {
                requests: Some(BTreeMap::from([
                    ("cpu".into(), quantity(&settings.resources.cpu_request)),
                    ("memory".into(), quantity(&settings.resources.memory_request)),
                ])),
                limits: Some(BTreeMap::from([
                    ("cpu".into(), quantity(&settings.resources.cpu_limit)),
                    ("memory".into(), quantity(&settings.resources.memory_limit)),
                ])),
                claims: None,
            });
        }
        let volumes = spec.volumes.get_or_insert_with(Vec::new);
        if !volumes.iter().any(|v| v.name == HOME_VOLUME) {
            volumes.push(Volume {
                name: HOME_VOLUME.into(),
                empty_dir: Some(EmptyDirVolumeSource {
                    medium: None,
                    size_limit: Some(Quantity(HOME_SIZE_LIMIT.into())),
                }),
                ..Default::default()
            });
        }
        if let RunnerStorage::Gateway { .. } = settings.storage {
            // The pod's own identity, for the storage gateway only: bound to
            // this pod, renewed by the kubelet, useless to the API server.
            let volumes = spec.volumes.get_or_insert_with(Vec::new);
            volumes.retain(|v| v.name != STORAGE_TOKEN_VOLUME);
            volumes.push(Volume {
                name: STORAGE_TOKEN_VOLUME.into(),
                projected: Some(ProjectedVolumeSource {
                    default_mode: Some(0o440),
                    sources: Some(vec![VolumeProjection {
                        service_account_token: Some(ServiceAccountTokenProjection {
                            audience: Some(super::token::STORAGE_AUDIENCE.into()),
                            expiration_seconds: Some(STORAGE_TOKEN_SECONDS),
                            path: "token".into(),
                        }),
                        ..Default::default()
                    }]),
                }),
                ..Default::default()
            });
        }

        let mut service = self.service.clone();
        set_metadata(&mut service.metadata, &name, &settings.namespace, &labels);
        let service_spec = service.spec.get_or_insert_with(Default::default);
        for port in service_spec.ports.iter_mut().flatten() {
            port.protocol.get_or_insert_with(|| "TCP".into());
        }
        service_spec.selector = Some(BTreeMap::from([
            (LABEL_PROJECT.to_string(), project.to_string()),
            (LABEL_OWNER.to_string(), settings.owner.clone()),
            (LABEL_COMPONENT.to_string(), "runner".to_string()),
        ]));

        let ingress = match &settings.routing {
            Routing::Gateway => None,
            Routing::Ingress {
                class,
                ide_domain,
                preview_domain,
            } => {
                let mut ingress = self.ingress.clone().unwrap_or_default();
                set_metadata(&mut ingress.metadata, &name, &settings.namespace, &labels);
                let spec = ingress.spec.get_or_insert_with(Default::default);
                if class.is_some() {
                    spec.ingress_class_name = class.clone();
                }
                let rule = |host: String, port: u16| IngressRule {
                    host: Some(host),
                    http: Some(HTTPIngressRuleValue {
                        paths: vec![HTTPIngressPath {
                            path: Some("/".into()),
                            path_type: "Prefix".into(),
                            backend: IngressBackend {
                                service: Some(IngressServiceBackend {
                                    name: name.clone(),
                                    port: Some(ServiceBackendPort {
                                        number: Some(port as i32),
                                        name: None,
                                    }),
                                }),
                                resource: None,
                            },
                        }],
                    }),
                };
                spec.rules = Some(vec![
                    rule(format!("{project}.{ide_domain}"), RUNNER_PORT),
                    rule(format!("{project}.{preview_domain}"), PREVIEW_PORT),
                ]);
                Some(ingress)
            }
        };
        Rendered { pod, service, ingress }
    }
}

fn set_metadata(
    metadata: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    name: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) {
    metadata.name = Some(name.to_string());
    metadata.namespace = Some(namespace.to_string());
    metadata.generate_name = None;
    metadata.resource_version = None;
    metadata.uid = None;
    let all = metadata.labels.get_or_insert_with(BTreeMap::new);
    all.extend(labels.clone());
}

/// Makes `pod` the owner: deleting the pod (stop, delete, a lost node)
/// removes the object with it, so nothing is left behind.
pub fn owned_by(metadata: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, pod_name: &str, uid: &str) {
    metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: pod_name.to_string(),
        uid: uid.to_string(),
        controller: Some(true),
        block_owner_deletion: None,
    }]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(routing: Routing) -> RunnerSettings {
        RunnerSettings {
            namespace: "cloudcode-projects".into(),
            owner: "main".into(),
            image: Some("registry.example/runner:1.2".into()),
            resources: Resources::default(),
            storage: RunnerStorage::Direct {
                env: vec![
                    ("CLOUDCODE_STORAGE".into(), "s3".into()),
                    ("CLOUDCODE_S3_BUCKET".into(), "repls".into()),
                ],
                secret_prefix: Some("cloudcode-storage-".into()),
            },
            routing,
            cluster_domain: "cluster.local".into(),
        }
    }

    fn id(s: &str) -> ProjectId {
        ProjectId::parse(s).unwrap()
    }

    #[test]
    fn names_are_valid_service_names_and_never_collide() {
        assert_eq!(object_name(&id("1st-app")), "p-1st-app");
        let long_a = id(&format!("{}a", "x".repeat(62)));
        let long_b = id(&format!("{}b", "x".repeat(62)));
        let (a, b) = (object_name(&long_a), object_name(&long_b));
        assert!(a.len() <= 63 && b.len() <= 63, "{a}");
        assert_ne!(a, b);
        assert!(a.starts_with("q-"));
        assert_eq!(object_name(&long_a), a, "stable");
    }

    #[test]
    fn the_default_template_renders_a_restricted_labelled_runner() {
        let template = Template::parse(DEFAULT_TEMPLATE).unwrap();
        let rendered = template.render(&id("demo"), "PUBKEY", &settings(Routing::Gateway));
        let pod = &rendered.pod;
        assert_eq!(pod.metadata.name.as_deref(), Some("p-demo"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("cloudcode-projects"));
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_PROJECT], "demo");
        assert_eq!(labels[LABEL_OWNER], "main");
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(spec.security_context.as_ref().unwrap().run_as_non_root, Some(true));
        let runner = &spec.containers[0];
        assert_eq!(runner.image.as_deref(), Some("registry.example/runner:1.2"));
        let args = runner.args.as_ref().unwrap();
        assert_eq!(
            args,
            &[
                "--project",
                "demo",
                "--token-public-key",
                "PUBKEY",
                "--listen",
                "0.0.0.0:3001",
                "--workspace",
                "/workspace",
                "--home",
                "/home/user"
            ]
        );
        // The home is its own volume, not the workspace, and the HOME of
        // everything in the pod.
        let home_mount = runner
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == HOME_VOLUME)
            .unwrap();
        assert_eq!(home_mount.mount_path, "/home/user");
        let home_volume = spec.volumes.iter().flatten().find(|v| v.name == HOME_VOLUME).unwrap();
        assert!(home_volume.empty_dir.is_some());
        assert!(
            runner
                .env
                .iter()
                .flatten()
                .any(|e| e.name == "HOME" && e.value.as_deref() == Some("/home/user"))
        );
        let security = runner.security_context.as_ref().unwrap();
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(
            security.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
        assert_eq!(security.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        let resources = runner.resources.as_ref().unwrap();
        assert_eq!(resources.requests.as_ref().unwrap()["memory"].0, "96Mi");
        assert_eq!(resources.limits.as_ref().unwrap()["cpu"].0, "1");
        let probe = runner.readiness_probe.as_ref().unwrap();
        assert_eq!(probe.http_get.as_ref().unwrap().path.as_deref(), Some("/v1/ready"));
        let env = runner.env.as_ref().unwrap();
        assert!(
            env.iter()
                .any(|e| e.name == "CLOUDCODE_S3_BUCKET" && e.value.as_deref() == Some("repls"))
        );
        let secret = runner.env_from.as_ref().unwrap()[0].secret_ref.as_ref().unwrap();
        assert_eq!(secret.name, "cloudcode-storage-demo");
        // No credential value is in the pod itself.
        let json = serde_json::to_string(pod).unwrap();
        assert!(!json.contains("SECRET_ACCESS_KEY"), "{json}");

        let service = rendered.service.spec.as_ref().unwrap();
        assert_eq!(service.selector.as_ref().unwrap()[LABEL_PROJECT], "demo");
        let ports: Vec<i32> = service.ports.as_ref().unwrap().iter().map(|p| p.port).collect();
        assert_eq!(ports, [3001, 3000]);
        assert!(rendered.ingress.is_none(), "the gateway routes; no ingress per project");
    }

    #[test]
    fn a_template_without_a_home_volume_gets_one() {
        let mut template = Template::parse(DEFAULT_TEMPLATE).unwrap();
        let spec = template.pod.spec.as_mut().unwrap();
        spec.volumes.as_mut().unwrap().retain(|v| v.name != HOME_VOLUME);
        spec.containers[0]
            .volume_mounts
            .as_mut()
            .unwrap()
            .retain(|m| m.name != HOME_VOLUME);
        let rendered = template.render(&id("demo"), "PUBKEY", &settings(Routing::Gateway));
        let spec = rendered.pod.spec.unwrap();
        let runner = &spec.containers[0];
        let mount = runner
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == HOME_VOLUME)
            .unwrap();
        assert_eq!(mount.mount_path, SANDBOX_HOME);
        let volume = spec.volumes.iter().flatten().find(|v| v.name == HOME_VOLUME).unwrap();
        assert_eq!(
            volume.empty_dir.as_ref().unwrap().size_limit,
            Some(Quantity(HOME_SIZE_LIMIT.into()))
        );
        let args = runner.args.as_ref().unwrap();
        assert!(
            args.windows(2).any(|w| w[0] == "--home" && w[1] == SANDBOX_HOME),
            "{args:?}"
        );
    }

    #[test]
    fn gateway_storage_gives_the_pod_its_bound_token_and_no_credential() {
        let template = Template::parse(DEFAULT_TEMPLATE).unwrap();
        let settings = RunnerSettings {
            storage: RunnerStorage::Gateway {
                url: "http://cloudcode-storage.cloudcode.svc:8081".into(),
            },
            ..settings(Routing::Gateway)
        };
        let pod = template.render(&id("demo"), "K", &settings).pod;
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.automount_service_account_token, Some(false));
        let volume = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == STORAGE_TOKEN_VOLUME)
            .expect("a projected token volume");
        let sources = volume.projected.as_ref().unwrap().sources.as_ref().unwrap();
        let token = sources[0].service_account_token.as_ref().unwrap();
        assert_eq!(token.audience.as_deref(), Some("cloudcode-storage"));
        assert_eq!(token.expiration_seconds, Some(3600));
        assert_eq!(token.path, "token");
        let runner = &spec.containers[0];
        let mount = runner
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == STORAGE_TOKEN_VOLUME)
            .unwrap();
        assert_eq!(mount.mount_path, STORAGE_TOKEN_DIR);
        assert_eq!(mount.read_only, Some(true));
        let env: std::collections::HashMap<_, _> = runner
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.as_str(), e.value.as_deref().unwrap_or_default()))
            .collect();
        assert_eq!(env["CLOUDCODE_STORAGE"], "gateway");
        assert_eq!(
            env["CLOUDCODE_STORAGE_GATEWAY_URL"],
            "http://cloudcode-storage.cloudcode.svc:8081"
        );
        assert_eq!(
            env["CLOUDCODE_STORAGE_TOKEN_FILE"],
            "/var/run/secrets/cloudcode/storage/token"
        );
        assert!(runner.env_from.is_none(), "no Secret at all");
        assert!(!env.keys().any(|k| k.starts_with("CLOUDCODE_S3")));
    }

    #[test]
    fn ingress_routing_gives_both_hosts_to_the_project_service() {
        let template = Template::parse(DEFAULT_TEMPLATE).unwrap();
        let routing = Routing::Ingress {
            class: Some("nginx".into()),
            ide_domain: "ide.example.com".into(),
            preview_domain: "preview.example.com".into(),
        };
        let rendered = template.render(&id("demo"), "K", &settings(routing));
        let ingress = rendered.ingress.unwrap();
        let spec = ingress.spec.unwrap();
        assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
        let rules = spec.rules.unwrap();
        let hosts: Vec<(&str, i32)> = rules
            .iter()
            .map(|r| {
                let backend = &r.http.as_ref().unwrap().paths[0].backend;
                let service = backend.service.as_ref().unwrap();
                assert_eq!(service.name, "p-demo");
                (
                    r.host.as_deref().unwrap(),
                    service.port.as_ref().unwrap().number.unwrap(),
                )
            })
            .collect();
        assert_eq!(
            hosts,
            [("demo.ide.example.com", 3001), ("demo.preview.example.com", 3000)]
        );
        assert!(
            ingress.metadata.annotations.unwrap()["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600",
            "the template's annotations stay"
        );
    }

    #[test]
    fn a_template_cannot_weaken_the_sandbox() {
        let yaml = DEFAULT_TEMPLATE
            .replace("allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true")
            .replace(
                "automountServiceAccountToken: false",
                "automountServiceAccountToken: true\n  hostNetwork: true",
            )
            .replace("drop: [\"ALL\"]", "add: [\"SYS_ADMIN\"]");
        let template = Template::parse(&yaml).unwrap();
        let pod = template.render(&id("demo"), "K", &settings(Routing::Gateway)).pod;
        let spec = pod.spec.unwrap();
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(spec.host_network, None);
        let security = spec.containers[0].security_context.clone().unwrap();
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.capabilities.unwrap().add, None);
    }

    #[test]
    fn broken_templates_are_refused_with_a_reason() {
        assert!(matches!(
            Template::parse("kind: Pod\nspec: [1"),
            Err(TemplateError::Yaml(_))
        ));
        assert!(matches!(
            Template::parse("apiVersion: v1\nkind: Service\nmetadata: {name: x}\n"),
            Err(TemplateError::Missing("Pod"))
        ));
        let no_runner =
            "apiVersion: v1\nkind: Pod\nspec:\n  containers: [{name: other}]\n---\napiVersion: v1\nkind: Service\n";
        assert!(matches!(
            Template::parse(no_runner),
            Err(TemplateError::NoRunnerContainer)
        ));
        assert!(matches!(
            Template::parse("apiVersion: v1\nkind: Secret\n"),
            Err(TemplateError::UnexpectedKind(k)) if k == "Secret"
        ));
    }
}
