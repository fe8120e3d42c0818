//! Login response status (RFC 7143 section 11.13.5).

/// Status-Class and Status-Detail of a Login Response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoginStatus {
    /// 0x0000: login is proceeding OK.
    Success,
    /// 0x0101: the target moved temporarily (TargetAddress given).
    TargetMovedTemporarily,
    /// 0x0102: the target moved permanently (TargetAddress given).
    TargetMovedPermanently,
    /// 0x0200: miscellaneous initiator error.
    InitiatorError,
    /// 0x0201: the initiator could not be authenticated, or authentication failed.
    AuthenticationFailure,
    /// 0x0202: the initiator is not allowed access to the target.
    AuthorizationFailure,
    /// 0x0203: the requested target does not exist here.
    NotFound,
    /// 0x0204: the target has been removed.
    TargetRemoved,
    /// 0x0205: the requested iSCSI version range is not supported.
    UnsupportedVersion,
    /// 0x0206: too many connections on this session.
    TooManyConnections,
    /// 0x0207: a required parameter is missing.
    MissingParameter,
    /// 0x0208: the target cannot include this connection in the session.
    CannotIncludeInSession,
    /// 0x0209: the session type is not supported.
    SessionTypeNotSupported,
    /// 0x020a: an attempt to add a connection to a non-existent session.
    SessionDoesNotExist,
    /// 0x020b: invalid request type during login.
    InvalidDuringLogin,
    /// 0x0300: target hardware or software error.
    TargetError,
    /// 0x0301: the iSCSI service or target is not currently operational.
    ServiceUnavailable,
    /// 0x0302: the target has insufficient session, connection or other resources.
    OutOfResources,
}

impl LoginStatus {
    /// The 16-bit Status-Class << 8 | Status-Detail.
    pub fn code(self) -> u16 {
        match self {
            LoginStatus::Success => 0x0000,
            LoginStatus::TargetMovedTemporarily => 0x0101,
            LoginStatus::TargetMovedPermanently => 0x0102,
            LoginStatus::InitiatorError => 0x0200,
            LoginStatus::AuthenticationFailure => 0x0201,
            LoginStatus::AuthorizationFailure => 0x0202,
            LoginStatus::NotFound => 0x0203,
            LoginStatus::TargetRemoved => 0x0204,
            LoginStatus::UnsupportedVersion => 0x0205,
            LoginStatus::TooManyConnections => 0x0206,
            LoginStatus::MissingParameter => 0x0207,
            LoginStatus::CannotIncludeInSession => 0x0208,
            LoginStatus::SessionTypeNotSupported => 0x0209,
            LoginStatus::SessionDoesNotExist => 0x020a,
            LoginStatus::InvalidDuringLogin => 0x020b,
            LoginStatus::TargetError => 0x0300,
            LoginStatus::ServiceUnavailable => 0x0301,
            LoginStatus::OutOfResources => 0x0302,
        }
    }

    /// Status-Class.
    pub fn class(self) -> u8 {
        (self.code() >> 8) as u8
    }

    /// Status-Detail.
    pub fn detail(self) -> u8 {
        (self.code() & 0xff) as u8
    }
}

/// A login that must end: the status to report and a human-readable reason for logs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("login failed ({:#06x}): {reason}", status.code())]
pub struct LoginFailure {
    /// Status to put in the final Login Response.
    pub status: LoginStatus,
    /// Why, for logs (never sent to the initiator).
    pub reason: String,
}

impl LoginFailure {
    /// Build a failure.
    pub fn new(status: LoginStatus, reason: impl Into<String>) -> Self {
        LoginFailure {
            status,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_split() {
        assert_eq!(LoginStatus::SessionDoesNotExist.class(), 2);
        assert_eq!(LoginStatus::SessionDoesNotExist.detail(), 0x0a);
        assert_eq!(LoginStatus::OutOfResources.class(), 3);
        assert_eq!(LoginStatus::OutOfResources.detail(), 2);
        assert_eq!(LoginStatus::Success.code(), 0);
    }
}
