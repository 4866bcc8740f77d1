"""Mints HS256 access tokens as hexmarket issues them: `mint.py SECRET customers N` prints N
customer tokens, `mint.py SECRET vendor USER_ID` one vendor token for that user."""
import base64, hashlib, hmac, json, sys, time, uuid

secret, role = sys.argv[1].encode(), sys.argv[2]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(sub: str, role: str) -> str:
    now = int(time.time())
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {
        "sub": sub, "role": role, "iat": now, "exp": now + 540, "iss": "hexmarket",
        "aud": "hexmarket-api", "jti": str(uuid.uuid4()), "typ": "access", "auth_time": now,
        "amr": ["pwd"],
    }
    signing = header + "." + b64(json.dumps(claims, separators=(",", ":")).encode())
    return signing + "." + b64(hmac.new(secret, signing.encode(), hashlib.sha256).digest())


if role == "customers":
    for _ in range(int(sys.argv[3])):
        print(token(str(uuid.uuid4()), "customer"))
else:
    print(token(sys.argv[3], role))
