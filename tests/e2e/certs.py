"""Throwaway certificate authorities and certificates, made with the openssl command line."""

import subprocess


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def certificate_authority(directory, name="routero-test-ca"):
    """A self-signed P-256 CA in `directory` (ca.crt, ca.key)."""
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", f"/CN={name}", cwd=directory)


def issue(directory, name, alt_names, usage="serverAuth", cert=None, key=None):
    """A P-256 certificate for `alt_names` (e.g. "DNS:x,IP:127.0.0.1") signed by the CA in
    `directory`, written to `cert` and `key` (default NAME.crt and NAME.key there)."""
    cert, key = cert or f"{name}.crt", key or f"{name}.key"
    (directory / f"{name}.ext").write_text(f"subjectAltName={alt_names}\nextendedKeyUsage={usage}\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", key, "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", cert, "-days", "1", "-extfile", f"{name}.ext", cwd=directory)
