//! The models this participant serves, for its institution's inference replicas (`hearth inference`,
//! `hearth.v1.ModelSource`): the file of the model in service of a family, `DATA_DIR/models/<family>.hearthm`,
//! which only the promotion gate, a pin or a rollback puts there; never a job's raw commit. Only this
//! institution's `inference` certificates are answered; every refusal is in the audit log
//! (`model.fetch`, `denied`), and so is every model handed out (`model.fetch`, `ok`), once per change.

use std::path::PathBuf;
use std::pin::Pin;

use hearth_audit::{Action, Event, Outcome};
use hearth_crypto::pki::Role;
use hearth_node::audit::AuditLog;
use hearth_proto::v1;
use sha2::{Digest, Sha256};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Families a replica may fetch: the recommender is left out, for the participant's recommender holds
/// the institution's purchase histories, and a replica holds no customer data.
/// The intent cascade's fast stage (`intent-fast`) goes with the intent model.
pub const REPLICATED: [&str; 3] = ["intent", hearth_inference::FAST_STAGE, "emotion"];

/// Largest data chunk of a reply.
const CHUNK: usize = 1 << 20;

/// `hearth.v1.ModelSource` on a participant.
#[derive(Debug, Clone)]
pub struct ModelSource {
    /// `DATA_DIR/models`.
    pub models_dir: PathBuf,
    /// This participant's institution (its own id).
    pub institution: String,
    /// Where fetches and refusals are recorded.
    pub audit: AuditLog,
}

type Chunks = Pin<Box<dyn Stream<Item = Result<v1::ServedModelChunk, Status>> + Send>>;

impl ModelSource {
    fn refuse(&self, who: &str, status: Status) -> Status {
        self.audit.record_event(
            Event::new(who, Action::ModelFetch, Outcome::Denied).detail(status.message().to_string()),
        );
        status
    }
}

#[tonic::async_trait]
impl v1::model_source_server::ModelSource for ModelSource {
    type ServedModelStream = Chunks;

    async fn served_model(
        &self,
        req: Request<v1::ServedModelRequest>,
    ) -> Result<Response<Self::ServedModelStream>, Status> {
        let who = hearth_transport::peer_identity(&req)?;
        let caller = who.to_string();
        if who.role != Role::Inference {
            return Err(self.refuse(
                &caller,
                Status::permission_denied(format!(
                    "a {} certificate may not fetch served models; only this institution's inference replicas \
                     (role inference) may",
                    who.role
                )),
            ));
        }
        if !who.acts_for(&self.institution) {
            return Err(self.refuse(
                &caller,
                Status::permission_denied(format!(
                    "this participant serves {}'s replicas; {caller} acts for {}",
                    self.institution,
                    who.institution.as_deref().unwrap_or("no institution")
                )),
            ));
        }
        let req = req.into_inner();
        let family: String = req.family.chars().take(32).collect();
        if family == "recommend" {
            return Err(Status::failed_precondition(
                "the recommender is served only by the participant: it holds the institution's purchase \
                 histories, which replicas never do; call the participant's /v1/recommend",
            ));
        }
        if !REPLICATED.contains(&family.as_str()) {
            return Err(Status::invalid_argument(format!(
                "unknown model family {family:?}; replicas serve {}",
                REPLICATED.join(", ")
            )));
        }
        let dir = self.models_dir.clone();
        let fam = family.clone();
        let read = tokio::task::spawn_blocking(move || {
            let path = crate::serving::current_path(&dir, &fam);
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(format!("reading {}: {e}", path.display())),
            };
            let pinned = crate::serving::pinned(&dir, &fam).map_err(|e| format!("{e:#}"))?;
            Ok(Some((bytes, pinned)))
        })
        .await
        .map_err(|e| Status::internal(format!("reading the served model: {e}")))?
        .map_err(Status::internal)?;
        let Some((bytes, pinned)) = read else {
            return Err(Status::not_found(format!("no {family} model is served here yet")));
        };
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let mut header = v1::ServedModelHeader {
            family: family.clone(),
            sha256: sha256.clone(),
            size: bytes.len() as u64,
            unchanged: req.have_sha256 == sha256,
            pinned: pinned.unwrap_or_default(),
            ..Default::default()
        };
        // Most polls find the replica up to date: the file is checked and read only when it is sent.
        if !header.unchanged {
            let meta = hearth_models::read_model_file(&bytes, crate::families::MAX_MODEL_FILE_BYTES)
                .map_err(|e| Status::internal(format!("the served {family} model file does not check: {e}")))?
                .metadata;
            header.job_id = meta.get("job_id").and_then(|v| v.as_str()).unwrap_or_default().to_string();
            header.version = meta.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
        }
        let mut chunks = vec![Ok(v1::ServedModelChunk {
            kind: Some(v1::served_model_chunk::Kind::Header(header.clone())),
        })];
        if !header.unchanged {
            self.audit.record_event(
                Event::new(&caller, Action::ModelFetch, Outcome::Ok)
                    .object(format!("{family}:{sha256}"))
                    .detail(format!("{family} model of job {} version {}", header.job_id, header.version)),
            );
            chunks.extend(bytes.chunks(CHUNK).map(|c| {
                Ok(v1::ServedModelChunk { kind: Some(v1::served_model_chunk::Kind::Data(c.to_vec().into())) })
            }));
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
}
