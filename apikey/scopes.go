package apikey

// Scopes a key can carry. All three gate the WebRTC part of TelAPI.
const (
	ScopeCreateCallToken = "CREATE_CALL_TOKEN"
	ScopeReadCallToken   = "READ_CALL_TOKEN"
	ScopeReadTeamApps    = "READ_TEAM_APPS"
)

// Scopes returns every scope, in catalogue order.
func Scopes() []string {
	return []string{ScopeCreateCallToken, ScopeReadCallToken, ScopeReadTeamApps}
}

// ScopeIndex returns the catalogue position of a scope, or -1 if unknown.
func ScopeIndex(s string) int {
	switch s {
	case ScopeCreateCallToken:
		return 0
	case ScopeReadCallToken:
		return 1
	case ScopeReadTeamApps:
		return 2
	}
	return -1
}
