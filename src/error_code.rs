//! Every `code` a problem body can carry, in one place. Handlers and services name codes by
//! these variants, never by string; the README's error table lists each of them, which a test
//! checks against [`ErrorCode::ALL`].

macro_rules! error_codes {
    ($($variant:ident = $code:literal,)*) => {
        /// A stable, snake_case problem code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            /// Every code, in the order of their names.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as the problem body carries it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }
        }
    };
}

error_codes! {
    AccountBanned = "account_banned",
    AlreadyRefunded = "already_refunded",
    AlreadyReported = "already_reported",
    AlreadyReviewed = "already_reviewed",
    AtCapacity = "at_capacity",
    BadRequest = "bad_request",
    BusUnavailable = "bus_unavailable",
    CannotDemoteSelf = "cannot_demote_self",
    CartContended = "cart_contended",
    CartEmpty = "cart_empty",
    CartFull = "cart_full",
    CartTokenRequired = "cart_token_required",
    CategoryCycle = "category_cycle",
    CategoryNameTaken = "category_name_taken",
    CategoryNotEmpty = "category_not_empty",
    CategoryTooDeep = "category_too_deep",
    CodeExhausted = "code_exhausted",
    Conflict = "conflict",
    Contended = "contended",
    CouponCodeTaken = "coupon_code_taken",
    CouponExhausted = "coupon_exhausted",
    CouponExpired = "coupon_expired",
    CouponMinSpend = "coupon_min_spend",
    CouponNotApplicable = "coupon_not_applicable",
    CouponUnknown = "coupon_unknown",
    DeliveryRefused = "delivery_refused",
    DeliveryUnavailable = "delivery_unavailable",
    EmailAlreadyVerified = "email_already_verified",
    EmailTaken = "email_taken",
    Forbidden = "forbidden",
    HeadersTooLarge = "headers_too_large",
    IdempotencyKeyRequired = "idempotency_key_required",
    IdempotencyKeyReused = "idempotency_key_reused",
    IllegalTransition = "illegal_transition",
    ImageMissing = "image_missing",
    InsufficientStock = "insufficient_stock",
    InternalError = "internal_error",
    InvalidCartToken = "invalid_cart_token",
    InvalidCode = "invalid_code",
    InvalidCredentials = "invalid_credentials",
    InvalidCursor = "invalid_cursor",
    InvalidDay = "invalid_day",
    InvalidEvent = "invalid_event",
    InvalidIdempotencyKey = "invalid_idempotency_key",
    InvalidImage = "invalid_image",
    InvalidJson = "invalid_json",
    InvalidLimit = "invalid_limit",
    InvalidLocation = "invalid_location",
    InvalidMessage = "invalid_message",
    InvalidPath = "invalid_path",
    InvalidPaymentState = "invalid_payment_state",
    InvalidProfile = "invalid_profile",
    InvalidPushKeys = "invalid_push_keys",
    InvalidQuery = "invalid_query",
    InvalidRange = "invalid_range",
    InvalidRefreshToken = "invalid_refresh_token",
    InvalidResolution = "invalid_resolution",
    InvalidSignature = "invalid_signature",
    InvalidToken = "invalid_token",
    LengthRequired = "length_required",
    MalformedJson = "malformed_json",
    MalformedMultipart = "malformed_multipart",
    MediaUnavailable = "media_unavailable",
    MethodNotAllowed = "method_not_allowed",
    MixedCurrencies = "mixed_currencies",
    NoReservation = "no_reservation",
    NoStore = "no_store",
    NotAWebsocket = "not_a_websocket",
    NotEligible = "not_eligible",
    NotFound = "not_found",
    NotOnline = "not_online",
    NotRefundable = "not_refundable",
    NotSimulated = "not_simulated",
    NotYourOrder = "not_your_order",
    OfferExpired = "offer_expired",
    OneImagePerRequest = "one_image_per_request",
    OriginNotAllowed = "origin_not_allowed",
    OutsideDeliveryArea = "outside_delivery_area",
    PasswordContainsEmail = "password_contains_email",
    PasswordTooCommon = "password_too_common",
    PasswordTooLong = "password_too_long",
    PasswordTooShort = "password_too_short",
    PayloadTooLarge = "payload_too_large",
    PaymentMethodUnavailable = "payment_method_unavailable",
    PhoneMissing = "phone_missing",
    ProductUnavailable = "product_unavailable",
    ProviderNotConfigured = "provider_not_configured",
    ProviderRejected = "provider_rejected",
    ProviderUnavailable = "provider_unavailable",
    RangeTooLong = "range_too_long",
    RateLimiterUnavailable = "rate_limiter_unavailable",
    RefundExceedsTotal = "refund_exceeds_total",
    RequestInProgress = "request_in_progress",
    RequestRefused = "request_refused",
    RequestTimeout = "request_timeout",
    SecondFactorMandatory = "second_factor_mandatory",
    SecondFactorRequired = "second_factor_required",
    ServiceUnavailable = "service_unavailable",
    SettingsVersionConflict = "settings_version_conflict",
    StepUpRequired = "step_up_required",
    StockBelowReserved = "stock_below_reserved",
    StockOutOfRange = "stock_out_of_range",
    StoreUnavailable = "store_unavailable",
    TicketClosed = "ticket_closed",
    TicketFull = "ticket_full",
    TooManyAttachments = "too_many_attachments",
    TooManyAttempts = "too_many_attempts",
    TooManyCategories = "too_many_categories",
    TooManyCheckouts = "too_many_checkouts",
    TooManyConnections = "too_many_connections",
    TooManyImages = "too_many_images",
    TooManyRequests = "too_many_requests",
    TooManySubscriptions = "too_many_subscriptions",
    TooManyWebhooks = "too_many_webhooks",
    TotpNotEnrolled = "totp_not_enrolled",
    TrackingEnded = "tracking_ended",
    Unauthenticated = "unauthenticated",
    Unavailable = "unavailable",
    UnknownAttachment = "unknown_attachment",
    UnknownField = "unknown_field",
    UnknownType = "unknown_type",
    UnsupportedFrame = "unsupported_frame",
    UnsupportedMediaType = "unsupported_media_type",
    ValidationFailed = "validation_failed",
    VendorExists = "vendor_exists",
    WebhookTargetRefused = "webhook_target_refused",
    WrongCode = "wrong_code",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
