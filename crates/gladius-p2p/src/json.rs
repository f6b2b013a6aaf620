//! Typed messages: JSON bodies for serde types (feature `json`, on by
//! default). The body stays bytes on the wire; this only encodes and
//! decodes it, so typed and untyped nodes interoperate.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{
    Message, MessageError, Network, NetworkError, Received, RequestError, SendReport, ToPeerAddr,
};

/// Why a JSON body could not be built or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JsonError {
    /// The value did not serialize (e.g. a map with non-string keys).
    #[error("could not encode JSON body: {0}")]
    Encode(#[source] serde_json::Error),
    /// The body is not JSON of the expected shape.
    #[error("could not decode JSON body: {0}")]
    Decode(#[source] serde_json::Error),
    /// The message itself is invalid (type empty or too long).
    #[error(transparent)]
    Message(#[from] MessageError),
}

impl Message {
    /// A message whose body is `value` as JSON.
    ///
    /// ```
    /// use gladius_p2p::Message;
    ///
    /// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    /// struct Offer { file: String, bytes: u64 }
    ///
    /// let msg = Message::json("content.offer", &Offer { file: "a.mp4".into(), bytes: 7 })?;
    /// assert_eq!(msg.body(), r#"{"file":"a.mp4","bytes":7}"#);
    /// # Ok::<(), gladius_p2p::JsonError>(())
    /// ```
    pub fn json<T: Serialize + ?Sized>(
        msg_type: impl Into<String>,
        value: &T,
    ) -> Result<Message, JsonError> {
        let body = serde_json::to_vec(value).map_err(JsonError::Encode)?;
        Ok(Message::new(msg_type, body)?)
    }

    /// The body decoded from JSON.
    pub fn json_body<T: DeserializeOwned>(&self) -> Result<T, JsonError> {
        serde_json::from_slice(self.body()).map_err(JsonError::Decode)
    }
}

impl Received {
    /// The message's body decoded from JSON (see [`Message::json`]).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, JsonError> {
        self.message().json_body()
    }
}

impl Network {
    /// [`request`](Self::request) with JSON bodies both ways: send `value`
    /// as a request of type `msg_type` and decode the reply as `R`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use gladius_p2p::{Config, Filter, Network};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let (a, b) = (Network::new(Config::default())?, Network::new(Config::default())?);
    /// a.listen("127.0.0.1:0").await?;
    /// let b_addr = b.listen("127.0.0.1:0").await?;
    /// // b answers "sum" requests with the sum of the numbers asked.
    /// let mut requests = b.subscribe(Filter::type_prefix("sum")).await?;
    /// let server = b.clone();
    /// tokio::spawn(async move {
    ///     while let Some(req) = requests.next().await {
    ///         let numbers: Vec<u32> = req.json()?;
    ///         server.reply_json(&req, "sum", &numbers.iter().sum::<u32>()).await?;
    ///     }
    ///     Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
    /// });
    /// let total: u32 = a.request_json("sum", &[1, 2, 3], b_addr, Duration::from_secs(5)).await?;
    /// assert_eq!(total, 6);
    /// # Ok(()) }
    /// ```
    pub async fn request_json<Q: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        msg_type: &str,
        value: &Q,
        peer: impl ToPeerAddr,
        timeout: Duration,
    ) -> Result<R, RequestError> {
        let msg = Message::json(msg_type, value)?;
        let reply = self.request(msg, peer, timeout).await?;
        Ok(reply.json()?)
    }

    /// [`reply`](Self::reply) with `value` as a JSON body of type `msg_type`.
    pub async fn reply_json<T: Serialize + ?Sized>(
        &self,
        to: &Received,
        msg_type: &str,
        value: &T,
    ) -> Result<SendReport, NetworkError> {
        let msg = Message::json(msg_type, value).map_err(NetworkError::Json)?;
        self.reply(to, msg).await
    }

    /// [`broadcast`](Self::broadcast) `value` as a JSON body of type
    /// `msg_type`.
    pub async fn broadcast_json<T: Serialize + ?Sized>(
        &self,
        msg_type: &str,
        value: &T,
    ) -> Result<SendReport, NetworkError> {
        let msg = Message::json(msg_type, value).map_err(NetworkError::Json)?;
        self.broadcast(msg).await
    }
}
