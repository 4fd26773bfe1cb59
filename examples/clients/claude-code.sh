# Claude Code: the gateway over Streamable HTTP (key as a bearer token) ...
claude mcp add --transport http gateway http://127.0.0.1:8000/mcp --header "Authorization: Bearer $MCP_GATEWAY_KEY"
# ... or over stdio, for when the gateway should run as a local process.
claude mcp add gateway --env MCP_GATEWAY_KEY="$MCP_GATEWAY_KEY" -- "$(which mcp-gateway)" stdio --config /etc/mcp-gateway/gateway.yaml
