//! The one mapping from errors to AWS error responses. Nothing else in Barge picks an HTTP
//! status.

use barge_core::CoreError;

/// An error answer: HTTP status, AWS error code (sent as `x-amzn-ErrorType` and `__type`) and
/// a message that tells the client what to fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    /// AWS Batch's 400 for anything the client can fix.
    pub fn client(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            code: "ClientException",
            message: message.into(),
        }
    }
    /// AWS Batch's 500: our fault, never the client's.
    pub fn server(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 500,
            code: "ServerException",
            message: message.into(),
        }
    }
    /// CloudWatch Logs' codes.
    pub fn logs_invalid(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            code: "InvalidParameterException",
            message: message.into(),
        }
    }
    pub fn logs_not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            code: "ResourceNotFoundException",
            message: message.into(),
        }
    }
    /// AWS's answer to a request that carries no signature where one is required. The
    /// codes below are the ones AWS's JSON services send for SigV4 failures (both Batch and
    /// CloudWatch Logs), so SDKs raise the exceptions people already know.
    pub fn missing_authentication_token(hint: &str) -> ApiError {
        ApiError {
            status: 403,
            code: "MissingAuthenticationTokenException",
            message: format!("Missing Authentication Token. {hint}"),
        }
    }
    /// An access key id that is not one of the configured keys.
    pub fn unrecognized_client(hint: &str) -> ApiError {
        ApiError {
            status: 403,
            code: "UnrecognizedClientException",
            message: format!("The security token included in the request is invalid. {hint}"),
        }
    }
    /// A signature that does not verify, or a well-formed one used outside its scope or time.
    pub fn invalid_signature(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 403,
            code: "InvalidSignatureException",
            message: message.into(),
        }
    }
    /// An Authorization header that is not a complete SigV4 one. 400, as AWS documents for
    /// IncompleteSignature: the request is malformed rather than forbidden.
    pub fn incomplete_signature(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            code: "IncompleteSignatureException",
            message: message.into(),
        }
    }
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "__type": self.code, "message": self.message }))
            .expect("error bodies serialize")
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> ApiError {
        ApiError::client(e.to_string())
    }
}
