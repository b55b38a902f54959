"""Operations: the bento build, the HTTPS edge (Caddy), API key management and the main job
(`training up`) that starts the whole stack."""
